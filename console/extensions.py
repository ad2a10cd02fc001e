"""Flask extensions, created unbound and initialised in ``create_app``."""
from flask import current_app
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session


class JsonErrorsForApiOnly(Api):
    """flask-smorest's Api, minus its app-wide JSON error handler: pages keep HTML errors (see errors.py)."""

    def _register_error_handlers(self):
        pass


db = SQLAlchemy()
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()
api = JsonErrorsForApiOnly()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    # WAL lets the in-process worker write while pages read; foreign keys are off by default in SQLite.  In WAL mode
    # synchronous=NORMAL never corrupts the database and skips an fsync per commit (7 ms each here): a power cut
    # may lose the last commits, which the reconciler redoes (its operations are level-triggered).
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


# A request that wrote nothing ends its transaction with COMMIT, not ROLLBACK: the same to the database, but psycopg
# forgets every statement it has prepared at a rollback, so PostgreSQL would parse and plan each statement of every
# request anew.  A session's transaction is marked as having written by any flush and any statement but a SELECT
# (text included); a marked one is rolled back as before.
WROTE = "hubfleet.wrote"


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state):
    if not state.is_select:
        state.session.info[WROTE] = True


@event.listens_for(Session, "after_flush")
def _note_flush(session, _context):
    session.info[WROTE] = True


@event.listens_for(Session, "after_transaction_end")
def _forget_writes(session, transaction):
    if transaction.parent is None:
        session.info.pop(WROTE, None)


def commit_reads(error: BaseException | None) -> None:
    """``teardown_request``: commit the request's transaction when it wrote nothing and holds no change (see WROTE);
    any other is rolled back when the session is removed, as always."""
    if error is not None or not db.session.registry.has():
        return
    session = db.session()
    if not session.in_transaction() or session.info.get(WROTE):
        return
    if session.new or session.dirty or session.deleted:
        return
    try:
        session.commit()
    except SQLAlchemyError as exc:  # the database went away: the session's removal cleans up, the answer stands
        current_app.logger.warning("ending a read-only transaction failed: %s", exc)
