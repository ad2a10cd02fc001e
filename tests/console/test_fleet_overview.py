"""The fleet overview: counts by status, problems first, search, filters, sorting and pages done by the database,
tenant scoping, hostile query parameters, and the polling refresh answered 204 while nothing shown has changed."""
import itertools
import re

import pytest
from clusters import lifecycle
from sqlalchemy import event, select

from console import status
from console.extensions import db
from console.models import OPERATION_PENDING, SUCCEEDED, Hub, Operation
from console.services import fleet, operations
from console.status import ACTIVITIES, DEGRADED, DOWN, HEALTHY, UNKNOWN

HX = {"HX-Request": "true"}


@pytest.fixture
def add_hub(ctx):
    """``add_hub(slug, institution, cluster, **columns)``: a hub row as monitoring left it (committed)."""

    def make(slug, institution, cluster, **columns):
        hub = Hub(slug=slug, institution_id=institution.id, cluster_id=cluster.id, spec={}, backend_state={},
                  **{"state": lifecycle.RUNNING, "health": HEALTHY, **columns})
        db.session.add(hub)
        db.session.commit()
        return hub

    return make


@pytest.fixture
def fleet_of(add_hub, create_institution, create_cluster):
    """North (on cluster "fast") and South (on "slow") with 120 hubs between them: 3 down, 2 degraded, 1 failed,
    JupyterHub 5.3.0 or 4.1.6, user counts 0..119."""

    def make():
        north, south = create_institution("north", "North College"), create_institution("south", "South University")
        fast, slow = create_cluster("fast"), create_cluster("slow")
        health = {7: DOWN, 30: DOWN, 88: DOWN, 12: DEGRADED, 60: DEGRADED}
        for i in range(120):
            inst, cluster = (north, fast) if i % 2 else (south, slow)
            add_hub(f"{inst.slug}-{i:03d}", inst, cluster, health=health.get(i, HEALTHY),
                    state=lifecycle.FAILED if i == 99 else lifecycle.RUNNING,
                    jupyterhub_version="4.1.6" if i % 3 == 0 else "5.3.0", user_count=i)
        return north, south

    return make


def rows(page: str) -> list[str]:
    return re.findall(r'<tr id="hub-([a-z0-9-]+)">', page)


def counts(page: str) -> str:
    strip = re.search(r'<p id="fleet-counts"[^>]*>(.*?)</p>', page, re.S).group(1)
    return " ".join(re.sub(r"<[^>]+>", "", strip).split())


def test_the_status_the_database_computes_is_the_one_people_read(ctx, add_hub, create_institution, create_cluster):
    inst, cluster = create_institution(), create_cluster()
    names = itertools.count()
    for state, health, desired in itertools.product(
            [s for s in lifecycle.STATES if s != lifecycle.DELETED], (HEALTHY, DEGRADED, DOWN, UNKNOWN),
            ("running", "deleted")):
        add_hub(f"h{next(names)}", inst, cluster, state=state, health=health, desired=desired)
    # every kind of operation, in every state, on a running hub and on a failed one; a finished one before it
    for kind, op_state, hub_state in itertools.product((*ACTIVITIES, "check"), (*OPERATION_PENDING, SUCCEEDED),
                                                       (lifecycle.RUNNING, lifecycle.FAILED, lifecycle.REQUESTED)):
        hub = add_hub(f"h{next(names)}", inst, cluster, state=hub_state, health=DOWN, restart_count=1)
        db.session.add_all([Operation(hub_id=hub.id, kind="restart", actor="a", state=SUCCEEDED),
                            Operation(hub_id=hub.id, kind=kind, actor="a", state=op_state)])
    # two unfinished ones: the oldest is the hub's current operation
    hub = add_hub(f"h{next(names)}", inst, cluster)
    db.session.add_all([Operation(hub_id=hub.id, kind="check", actor="a", state="running"),
                        Operation(hub_id=hub.id, kind="upgrade", actor="a", state="queued")])
    db.session.commit()

    hubs = db.session.execute(select(Hub)).unique().scalars().all()
    current = operations.current_by_hub([hub.id for hub in hubs])
    expected = {hub.id: status.hub_status(hub, current.get(hub.id)) for hub in hubs}
    computed = dict(db.session.execute(fleet.with_status(select(Hub.id, fleet.STATUS_KEY).select_from(Hub))).all())
    assert computed == {hub_id: found.key for hub_id, found in expected.items()}
    for found in expected.values():  # each key is offered as a filter, in the colour its badge has
        assert fleet.STATUSES[found.key].colour == found.colour, found.key
    assert len(set(computed.values())) >= 14


def test_counts_problems_first_search_filters_sort_and_pages(client, login, create_user, fleet_of):
    fleet_of()
    web = login(client, create_user("operator"))
    page = web.get("/").get_data(as_text=True)
    assert counts(page) == "120 hubs · 3 down · 1 failed · 2 degraded · 114 healthy"
    shown = rows(page)
    assert len(shown) == fleet.PAGE_SIZE and shown[:6] == ["north-007", "north-099", "south-030", "south-088",
                                                           "south-012", "south-060"]
    assert "Hubs 1–50 of 120 · page 1 of 3" in page and 'rel="next"' in page and 'rel="prev"' not in page
    last = web.get("/?page=3").get_data(as_text=True)
    assert len(rows(last)) == 20 and "page 3 of 3" in last and set(rows(last)).isdisjoint(shown)
    every = shown + rows(web.get("/?page=2").get_data(as_text=True)) + rows(last)
    assert len(set(every)) == 120

    def slugs(path):
        return rows(web.get(path).get_data(as_text=True))

    # search: hub slug, institution name, cluster name, version; any case; % and _ are literal
    assert slugs("/?q=NORTH-01") == [f"north-{i:03d}" for i in range(11, 20, 2)]
    assert len(slugs("/?q=university&page=2")) == 10 and slugs("/?q=slow") == slugs("/?q=south")
    assert counts(web.get("/?q=4.1.6").get_data(as_text=True)).startswith("40 hubs")
    assert slugs("/?q=%25") == [] and slugs("/?q=north_0") == []
    # filters, and the counts follow the search and filters (but not the status filter)
    assert slugs("/?status=down") == ["north-007", "south-030", "south-088"]
    north = web.get("/?institution=north&status=down").get_data(as_text=True)
    assert rows(north) == ["north-007"] and counts(north) == "60 hubs · 1 down · 1 failed · 58 healthy"
    assert slugs("/?cluster=slow&version=4.1.6&status=degraded") == ["south-012", "south-060"]
    assert "No hub matches" in web.get("/?q=nowhere").get_data(as_text=True)
    # sorting by a column, both ways; the header of the sorted column flips the order
    assert slugs("/?sort=users&order=desc")[:3] == ["north-119", "south-118", "north-117"]
    assert slugs("/?sort=hub")[:2] == ["north-001", "north-003"]
    by_users = web.get("/?sort=users&q=south").get_data(as_text=True)
    assert rows(by_users)[:2] == ["south-000", "south-002"] and 'aria-sort="ascending"' in by_users
    assert 'href="/?q=south&amp;sort=users&amp;order=desc"' in by_users
    # the form keeps what was asked, and offers what the fleet holds
    form = web.get("/?q=lab&institution=south&sort=cluster").get_data(as_text=True)
    assert 'name="q" value="lab"' in form and '<option value="south" selected>South University</option>' in form
    assert '<option value="4.1.6">4.1.6</option>' in form and 'name="sort" value="cluster"' in form


def test_the_page_runs_as_many_statements_for_120_hubs_as_for_3(app, client, login, create_user, add_hub,
                                                                create_institution, create_cluster, fleet_of):
    web = login(client, create_user("operator"))

    def statements(path):
        seen = []
        listener = lambda *args: seen.append(1)  # noqa: E731
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            assert web.get(path).status_code == 200
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        return len(seen)

    inst, cluster = create_institution("few"), create_cluster()
    for i in range(3):
        add_hub(f"few-{i}", inst, cluster)
    few = statements("/"), statements("/?q=few&sort=users")
    fleet_of()
    assert (statements("/"), statements("/?q=few&sort=users")) == few


def test_an_institution_admin_sees_only_their_institution(client, login, create_user, fleet_of):
    north, _ = fleet_of()
    web = login(client, create_user("institution_admin", institution=north))
    page = web.get("/").get_data(as_text=True)
    assert counts(page) == "60 hubs · 1 down · 1 failed · 58 healthy"
    assert "south-" not in page and "South University" not in page and "slow" not in page
    assert '<option value="north">North College</option>' in page
    assert rows(web.get("/?q=south").get_data(as_text=True)) == []
    assert rows(web.get("/?institution=south").get_data(as_text=True)) == []  # not a 400: it would tell it exists
    assert rows(web.get("/?cluster=slow").get_data(as_text=True)) == []
    member = login(client, create_user("member"))
    assert member.get("/").status_code == 403


@pytest.mark.parametrize("query, code, message", [
    ("page=-1", 400, "page must be a whole number from 1"),
    ("page=0", 400, "page must be a whole number from 1"),
    ("page=two", 400, "page must be a whole number from 1"),
    ("page=" + "9" * 10_000, 400, "page is too long"),
    ("sort=password", 400, "sort must be one of: status, hub, institution, cluster, version, users"),
    ("order=sideways", 400, "order must be asc or desc"),
    ("status=bogus", 400, "status must be one of:"),
    ("q=" + "x" * 10_000, 400, "q is too long: at most 200 characters"),
    # a NUL character is refused before any view runs, as in every request (console/limits.py)
    ("q=north%00", 422, "q: Use text without NUL characters."),
    ("institution=%00", 422, "institution: Use text without NUL characters."),
])
def test_hostile_parameters_get_a_clear_answer(client, login, create_user, fleet_of, query, code, message):
    fleet_of()
    web = login(client, create_user("operator"))
    for headers in ({}, HX):
        response = web.get(f"/?{query}", headers=headers)
        assert response.status_code == code and message in response.get_data(as_text=True), query


def test_a_page_past_the_last_shows_the_last(client, login, create_user, fleet_of):
    fleet_of()
    web = login(client, create_user("operator"))
    page = web.get(f"/?page={10 ** 30}").get_data(as_text=True)
    assert len(rows(page)) == 20 and "page 3 of 3" in page and 'hx-get="/?page=3"' in page
    assert "No hub matches" in web.get("/?q=nowhere&page=5").get_data(as_text=True)


def test_the_refresh_sends_the_visible_page_and_204_while_nothing_changed(client, login, create_user, fleet_of):
    fleet_of()
    web = login(client, create_user("operator"))
    page = web.get("/?q=north&page=2").get_data(as_text=True)
    polled = re.search(r'<div id="fleet-overview" hx-get="([^"]+)" hx-trigger="every 5s" hx-swap="outerHTML" '
                       r'hx-headers=\'\{"If-None-Match": "\\"([0-9a-f]+)\\""\}\'>', page)
    assert polled, page
    url, etag = polled.group(1).replace("&amp;", "&"), polled.group(2)
    assert url == "/?q=north&page=2"
    # the page's own table is already current: the first poll changes nothing
    unchanged = web.get(url, headers={**HX, "If-None-Match": f'"{etag}"'})
    assert unchanged.status_code == 204 and unchanged.get_data() == b"" and unchanged.headers["ETag"] == f'"{etag}"'
    fragment = web.get(url, headers=HX)
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and body.startswith('<div id="fleet-overview"') and "<html" not in body
    assert len(rows(body)) == 10 and fragment.headers["ETag"] == f'"{etag}"' and "HX-Request" in fragment.vary
    assert "<form" not in body and len(body) < 20_000  # the table, not the page

    hub = db.session.execute(select(Hub).filter_by(slug="north-101")).unique().scalar_one()
    hub.health = DOWN
    db.session.commit()
    changed = web.get(url, headers={**HX, "If-None-Match": f'"{etag}"'})
    body = changed.get_data(as_text=True)
    assert changed.status_code == 200 and changed.headers["ETag"] != f'"{etag}"'
    assert "60 hubs · 2 down · 1 failed" in counts(body) and f'\\"{changed.headers["ETag"][1:-1]}\\"' in body
