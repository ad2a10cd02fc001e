"""The fleet overview: the hubs a user may see, counted by status, searched, filtered, sorted and paged by the database.

A fleet of 10,000 hubs is never loaded whole.  One query counts the matching hubs by status, two load the page shown
(the ids of its :data:`PAGE_SIZE` hubs, then those hubs), and the filter form asks three small ones; their number
does not grow with the fleet.

The status a person reads for a hub is decided in Python by ``console.status.hub_status`` from the hub and its
current operation.  :data:`STATUS_KEY` is the same decision written as SQL, built from the same names (the lifecycle
states, the health values, ``status.ACTIVITIES``), so the database can count, filter and order by it;
``tests/console/test_fleet_overview.py`` checks that the two agree for every state, health and kind of operation.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from clusters import lifecycle
from sqlalchemy import ColumnElement, case, exists, func, literal, select
from sqlalchemy.orm import aliased, defer, joinedload, lazyload

from console import status
from console.extensions import db
from console.models import OPERATION_PENDING, QUEUED, Cluster, Hub, Institution, Operation, User
from console.services import scope

PAGE_SIZE = 50
MAX_TEXT = 200  # characters of a search or filter value: longer is no name the fleet holds
OPTION_LIMIT = 50  # a filter offers a drop-down up to this many choices, and a text box beyond


# -- the status, as SQL -------------------------------------------------------------------------------------------

def _activity_key(activity: str) -> str:
    return activity.lower().replace(" ", "-")  # as status.hub_status names it


# Each hub's oldest unfinished operation: the one ``services.operations.current_by_hub`` gives ``hub_status`` when
# there is one.  A finished operation never changes the status key (only the reason), so only these are joined.
_PENDING = (select(Operation.hub_id, func.min(Operation.id).label("op_id"))
            .where(Operation.state.in_(OPERATION_PENDING)).group_by(Operation.hub_id).subquery("pending_op"))
_CURRENT = aliased(Operation, name="current_op")

# A hub in one of these states reads as its health; in any other (live) state, as the state itself.
_READS_HEALTH = sorted(lifecycle.SERVING - {lifecycle.RECONFIGURING, lifecycle.UPGRADING})

# Nested, so the usual hub (no operation in progress) is decided in a few comparisons: it is computed for every hub.
STATUS_KEY: ColumnElement[str] = case(
    (Hub.state == lifecycle.DELETED, literal(lifecycle.DELETED)),
    (_CURRENT.kind.in_(sorted(status.ACTIVITIES)), case(
        (_CURRENT.state == QUEUED, literal("queued")),
        *((_CURRENT.kind == kind, literal(_activity_key(activity))) for kind, activity in status.ACTIVITIES.items()))),
    (Hub.state == lifecycle.REQUESTED, literal(lifecycle.REQUESTED)),
    (Hub.state == lifecycle.FAILED, literal(lifecycle.FAILED)),
    ((Hub.state == lifecycle.DELETING) | (Hub.desired == "deleted"), literal(lifecycle.DELETING)),
    (Hub.state.not_in(_READS_HEALTH), Hub.state),
    *((Hub.health == health, literal(health)) for health in (status.HEALTHY, status.DEGRADED, status.DOWN)),
    else_=literal(status.UNKNOWN))
"""``status.hub_status(hub, op).key`` as a column; needs :func:`with_status` joined."""


def with_status(query):
    """``query`` (which selects from ``hub``) with each hub's oldest unfinished operation outer-joined, as
    :data:`STATUS_KEY` reads it."""
    return (query.outerjoin(_PENDING, _PENDING.c.hub_id == Hub.id)
            .outerjoin(_CURRENT, _CURRENT.id == _PENDING.c.op_id))


@dataclass(frozen=True)
class StatusInfo:
    key: str
    label: str
    colour: str


def _catalogue() -> dict[str, StatusInfo]:
    """Every key :data:`STATUS_KEY` gives a live hub, with the label and colour ``hub_status`` shows it in, from the
    tables it reads: the lifecycle's states, the health badges, the activities of operations (blue) and "queued"
    (grey, as ``hub_status`` writes them)."""
    found = {state: StatusInfo(state, info.label, info.colour) for state, info in lifecycle.STATES.items()
             if state not in _READS_HEALTH and state != lifecycle.DELETED}
    found.update({key: StatusInfo(key, label, colour) for key, (label, colour) in status.BADGES["health"].items()})
    found.update({_activity_key(a): StatusInfo(_activity_key(a), a, "blue") for a in status.ACTIVITIES.values()})
    found["queued"] = StatusInfo("queued", "Queued", "grey")
    return found


STATUSES = _catalogue()
# Problems first: red (down, failed), then amber (degraded), then work in progress, then not known yet, then healthy.
PROBLEM_ORDER = ("red", "amber", "blue", "grey", "green")


def _rank(info: StatusInfo) -> int:
    return PROBLEM_ORDER.index(info.colour) if info.colour in PROBLEM_ORDER else len(PROBLEM_ORDER)


# What the status filter offers: (key, label), problems first.
STATUS_CHOICES = [(info.key, info.label) for info in sorted(STATUSES.values(), key=lambda i: (_rank(i), i.label))]

PROBLEM_RANK: ColumnElement[int] = case({key: _rank(info) for key, info in STATUSES.items()}, value=STATUS_KEY,
                                        else_=len(PROBLEM_ORDER))


# -- the query a page asks -----------------------------------------------------------------------------------------

# The columns a page may be sorted by (the table's headers link to them); "status" puts problems first.
SORTS: dict[str, ColumnElement] = {
    "status": PROBLEM_RANK,
    "hub": Hub.slug,
    "institution": Institution.name,
    "cluster": Cluster.name,
    "version": Hub.jupyterhub_version,
    "users": Hub.user_count,
}
ORDERS = ("asc", "desc")
FILTERS = ("q", "status", "institution", "cluster", "version")
_PAGE_RE = re.compile(r"[0-9]+")


class BadQuery(ValueError):
    """A query parameter the overview cannot answer; the message says which and what it accepts."""


@dataclass(frozen=True)
class FleetQuery:
    """What a page of the overview shows: a search, filters (each empty for "any"), a sort and a page (from 1)."""

    q: str = ""
    status: str = ""
    institution: str = ""  # slug
    cluster: str = ""  # name
    version: str = ""  # JupyterHub version, exactly
    sort: str = "status"
    order: str = "asc"
    page: int = 1

    @property
    def filtered(self) -> bool:
        return any(getattr(self, name) for name in FILTERS)

    def params(self, **changes) -> dict[str, str | int]:
        """URL parameters of this query with ``changes``, defaults left out (short, shareable links)."""
        changed = replace(self, **changes)
        default = FleetQuery()
        return {name: getattr(changed, name) for name in (*FILTERS, "sort", "order", "page")
                if getattr(changed, name) != getattr(default, name)}

    def sorted_by(self, sort: str) -> dict[str, str | int]:
        """Parameters of the link on a column header: sort by it (ascending), or flip the order if it is the sort."""
        order = ("desc" if self.order == "asc" else "asc") if sort == self.sort else "asc"
        return self.params(sort=sort, order=order, page=1)


def parse_query(args: Mapping[str, str]) -> FleetQuery:
    """The query in a request's parameters; unknown parameters are ignored.  Raises :class:`BadQuery` (never reaching
    the database) for a value too long or holding a NUL character, an unknown status, sort or order, or a page that
    is not a whole number from 1.  A page past the last is not an error: :func:`overview` shows the last one."""
    values = {}
    for name in (*FILTERS, "sort", "order", "page"):
        value = args.get(name, "")
        if "\x00" in value:
            raise BadQuery(f"{name} must not contain a NUL character")
        if len(value) > MAX_TEXT:
            raise BadQuery(f"{name} is too long: at most {MAX_TEXT} characters")
        values[name] = value.strip()
    if values["status"] and values["status"] not in STATUSES:
        raise BadQuery(f"status must be one of: {', '.join(sorted(STATUSES))}")
    if values["sort"] and values["sort"] not in SORTS:
        raise BadQuery(f"sort must be one of: {', '.join(SORTS)}")
    if values["order"] and values["order"] not in ORDERS:
        raise BadQuery("order must be asc or desc")
    page = values.pop("page")
    if page and (not _PAGE_RE.fullmatch(page) or int(page) < 1):
        raise BadQuery("page must be a whole number from 1")
    return FleetQuery(**{name: value for name, value in values.items() if value}, page=int(page or 1))


# -- answering it --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusCount:
    info: StatusInfo
    count: int


@dataclass(frozen=True)
class Overview:
    """One page of the overview.  ``counts`` are by status among the hubs that match everything but the status
    filter (so each links to its own hubs), problems first; ``matching`` is how many match the whole query."""

    query: FleetQuery  # with the page actually shown
    hubs: list[Hub]
    counts: list[StatusCount]
    total: int  # hubs matching all but the status filter
    matching: int
    pages: int

    @property
    def first(self) -> int:
        """The position of the first hub shown (1-based; 0 when none is)."""
        return (self.query.page - 1) * PAGE_SIZE + 1 if self.hubs else 0

    @property
    def last(self) -> int:
        return self.first + len(self.hubs) - 1 if self.hubs else 0


def _search(q: str) -> ColumnElement[bool]:
    """Hubs whose slug, institution slug or name, cluster name or JupyterHub version holds ``q`` (any case, ``%`` and
    ``_`` taken literally).  Institutions and clusters are searched once each, not once per hub."""

    def holds(column):
        return column.icontains(q, autoescape=True)

    institutions = select(Institution.id).where(holds(Institution.slug) | holds(Institution.name))
    # Hub slugs are lower case (hubs.SLUG_RE): a plain LIKE, cheaper than ILIKE on PostgreSQL for every hub.
    slug = Hub.slug.contains(q.lower(), autoescape=True)
    return db.or_(slug, holds(Hub.jupyterhub_version), Hub.institution_id.in_(institutions),
                  Hub.cluster_id.in_(select(Cluster.id).where(holds(Cluster.name))))


def _matching(user: User, query: FleetQuery, columns, joined: bool):
    """A select of ``columns`` over the live hubs ``user`` sees that match ``query``'s search and filters (its
    status filter left to the caller), the current operation joined for :data:`STATUS_KEY`; institution and cluster
    joined when ``joined`` (to sort by them)."""
    select_ = select(*columns).select_from(Hub)
    if joined:
        select_ = select_.join(Hub.institution).join(Hub.cluster)
    select_ = with_status(select_).where(scope.hubs(user).whereclause)
    if query.q:
        select_ = select_.where(_search(query.q))
    if query.institution:
        select_ = select_.where(Hub.institution_id == select(Institution.id).where(
            Institution.slug == query.institution).scalar_subquery())
    if query.cluster:
        select_ = select_.where(Hub.cluster_id == select(Cluster.id).where(
            Cluster.name == query.cluster).scalar_subquery())
    if query.version:
        select_ = select_.where(Hub.jupyterhub_version == query.version)
    return select_


_JOINED_SORTS = ("institution", "cluster")


def _order(query: FleetQuery) -> list:
    column = SORTS[query.sort]
    first = column.desc() if query.order == "desc" else column.asc()
    # Hubs without a version or a user count yet go last either way; the slug breaks ties, so pages never overlap.
    return [column.is_(None), first, Hub.slug, Hub.id] if query.sort in ("version", "users") else \
        [first, Hub.slug, Hub.id]


def _counts(user: User, query: FleetQuery) -> dict[str, int]:
    # Grouped outside: PostgreSQL would not see the CASE in GROUP BY, with its own parameters, as the selected one.
    keys = _matching(user, query, (STATUS_KEY.label("key"),), joined=False).subquery("keyed")
    return dict(db.session.execute(select(keys.c.key, func.count()).group_by(keys.c.key)).all())


def _page(user: User, query: FleetQuery) -> list[Hub]:
    # The page's ids first, ordered over the whole fleet from the hub rows alone (institution and cluster joined
    # only to sort by them), then those hubs with what the table shows of them.
    ids = _matching(user, query, (Hub.id,), joined=query.sort in _JOINED_SORTS)
    if query.status:
        ids = ids.where(STATUS_KEY == query.status)
    ids = db.session.execute(ids.order_by(*_order(query)).limit(PAGE_SIZE).offset((query.page - 1) * PAGE_SIZE)
                             ).scalars().all()
    if not ids:
        return []
    loaded = {hub.id: hub for hub in db.session.execute(select(Hub).where(Hub.id.in_(ids)).options(
        joinedload(Hub.institution).load_only(Institution.slug, Institution.name),
        joinedload(Hub.cluster).load_only(Cluster.name), lazyload(Hub.release),
        defer(Hub.spec), defer(Hub.backend_state))).unique().scalars()}
    return [loaded[hub_id] for hub_id in ids if hub_id in loaded]  # one deleted in between is left out


def overview(user: User, query: FleetQuery) -> Overview:
    """The page of the fleet ``query`` asks for, as ``user`` sees it, in three statements whatever the fleet's
    size: the counts, the ids of the page's hubs, those hubs.

    A page past the last shows the last (a hub deleted while someone pages through the fleet moves the end)."""
    by_key = _counts(user, query)
    counts = [StatusCount(STATUSES.get(key) or StatusInfo(key, key, "blue"), count) for key, count in by_key.items()]
    counts.sort(key=lambda c: (_rank(c.info), c.info.label))
    total = sum(by_key.values())
    matching = by_key.get(query.status, 0) if query.status else total
    pages = max(1, -(-matching // PAGE_SIZE))
    query = replace(query, page=min(query.page, pages))
    return Overview(query=query, hubs=_page(user, query) if matching else [], counts=counts, total=total,
                    matching=matching, pages=pages)


@dataclass(frozen=True)
class FilterChoices:
    """What the filter form offers, from the hubs ``user`` sees, as (value, label) pairs: each list is None when it
    is longer than :data:`OPTION_LIMIT` (the form asks for the value in a text box instead)."""

    institutions: list[tuple[str, str]] | None = None  # (slug, name)
    clusters: list[tuple[str, str]] | None = None
    versions: list[tuple[str, str]] | None = None


def _at_most(query) -> list | None:
    rows = db.session.execute(query.limit(OPTION_LIMIT + 1)).all()
    return None if len(rows) > OPTION_LIMIT else rows


def filter_choices(user: User) -> FilterChoices:
    """The institutions, clusters and JupyterHub versions of the live hubs ``user`` sees (an institution admin: only
    their own institution and the clusters their hubs run on), three statements."""
    visible = scope.hubs(user).whereclause
    # EXISTS, not IN: each institution or cluster is probed through the hub's index, and the scan stops at the limit.
    institutions = _at_most(select(Institution.slug, Institution.name).where(
        exists().where(Hub.institution_id == Institution.id, visible)).order_by(Institution.name, Institution.slug))
    clusters = _at_most(select(Cluster.name).where(
        exists().where(Hub.cluster_id == Cluster.id, visible)).order_by(Cluster.name))
    versions = _at_most(select(Hub.jupyterhub_version).where(visible, Hub.jupyterhub_version.is_not(None))
                        .distinct().order_by(Hub.jupyterhub_version))
    return FilterChoices(
        institutions=None if institutions is None else [(slug, name) for slug, name in institutions],
        clusters=None if clusters is None else [(name, name) for (name,) in clusters],
        versions=None if versions is None else [(version, version) for (version,) in versions])
