"""A request that only read ends its transaction with COMMIT, so PostgreSQL keeps the statements psycopg prepared
(a rollback makes psycopg drop them all); a request that wrote and did not commit is rolled back as before."""
import pytest
from flask import abort
from sqlalchemy import event, text, update

from console import security
from console.extensions import db
from console.models import Institution


@pytest.fixture
def probe(app, monkeypatch):
    """Routes that read, or write without committing, then answer; and the transaction ends the requests had.  No
    app context is held around the requests, so each has its own session, as in production."""
    with app.app_context():
        db.session.add(Institution(slug="north", name="North"))
        db.session.commit()
        engine = db.engine

    def north():
        return db.session.execute(db.select(Institution).filter_by(slug="north")).scalar_one()

    def read():
        return north().name

    def flush_then_refuse():
        db.session.add(Institution(slug="south", name="South"))
        db.session.flush()
        return "refused", 422

    def update_then_refuse():
        db.session.execute(update(Institution).values(name="Changed"))
        return "refused", 422

    def text_then_answer():
        db.session.execute(text("UPDATE institution SET name = 'Texted'"))
        return "ok"

    def change_unflushed():
        north().name = "Unflushed"
        return "ok"

    def read_then_fail():
        north()
        abort(404)

    for view in (read, flush_then_refuse, update_then_refuse, text_then_answer, change_unflushed, read_then_fail):
        app.add_url_rule(f"/probe/{view.__name__}", view.__name__, view)
    monkeypatch.setattr(security, "PUBLIC_ENDPOINTS", security.PUBLIC_ENDPOINTS | {
        view.__name__ for view in (read, flush_then_refuse, update_then_refuse, text_then_answer, change_unflushed,
                                   read_then_fail)})
    ends = []
    event.listen(engine, "commit", lambda conn: ends.append("commit"))
    event.listen(engine, "rollback", lambda conn: ends.append("rollback"))
    yield ends


def names(app):
    with app.app_context():
        return sorted((i.slug, i.name) for i in db.session.execute(db.select(Institution)).scalars())


def test_reads_end_in_commit_and_unfinished_writes_in_rollback(app, client, probe):
    for path, status in (("read", 200), ("read_then_fail", 404)):
        probe.clear()
        assert client.get(f"/probe/{path}").status_code == status
        assert probe[-1:] == ["commit"], (path, probe)
    for path, status in (("flush_then_refuse", 422), ("update_then_refuse", 422), ("text_then_answer", 200),
                         ("change_unflushed", 200)):
        probe.clear()
        assert client.get(f"/probe/{path}").status_code == status
        assert probe == ["rollback"], (path, probe)
        assert names(app) == [("north", "North")], path


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_keeps_its_prepared_statements_across_requests(app, client, probe):
    """psycopg prepares a statement run 5 times on one connection; a rollback would have dropped it."""
    for _ in range(8):
        assert client.get("/probe/read").status_code == 200
    with app.app_context():  # requests run one at a time here, on the pool's one connection
        prepared = db.session.execute(text("SELECT statement FROM pg_prepared_statements")).scalars().all()
    assert any("FROM institution" in statement for statement in prepared), prepared
