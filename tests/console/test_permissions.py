"""The permission table, and every route answering exactly as the table says.

The matrix is generated: for each role (an operator; the admin of institution A, who is also "the admin of another
institution" for B's objects) every registered route and method is asked about A's objects, B's objects and
fleet-wide ones.  What each answer must be comes from ``console.permissions`` alone: 404 when the object is not
visible to the user, 403 when it is visible but the route's declared action is not allowed, otherwise anything but
401/403/404/5xx (an allowed request may still be refused for its input: 400, 409, 422).
"""
from __future__ import annotations

import pytest
from sqlalchemy import inspect

from console import permissions
from console.extensions import db
from console.models import (ApiToken, AuditEvent, Hub, Membership, Operation, Release, Rollout, RolloutHub, User,
                            WebhookTarget)
from console.permissions import ACTIONS, FLEET, ROLES, SIGNED_IN, UnknownAction, action_of, can, sees
from console.security import PUBLIC_ENDPOINTS as PUBLIC
from console.services import memberships
from console.services.people import invite
from console.services.tokens import new_api_token
from tests.conftest import csrf_from
from tests.console.test_access import all_routes

# Routes that are not the console's own views: Flask's static files and the OpenAPI document (both need a login).
UNDECLARED = {"static", "api-docs.openapi_json"}
# One value for a URL argument that names what to do, so that the request is harmless when allowed.
VERBS = ("pause", "skip", "retry")


def test_every_action_is_described_and_every_role_grants_known_actions():
    assert all(ACTIONS.values())
    for role in ROLES.values():
        assert role.actions <= ACTIONS.keys()
    # Operators may do everything; institution admins neither create, delete nor touch the fleet's parts.
    assert ROLES["operator"].actions == ACTIONS.keys()
    assert {"hub.create", "hub.delete", "hub.upgrade", "cluster.view", "release.manage", "rollout.view",
            "policy.set", "fleet.export"}.isdisjoint(ROLES["institution_admin"].actions)


def test_unknown_action_names_are_refused():
    with pytest.raises(UnknownAction):
        permissions.requires("hub.reboot")
    with pytest.raises(UnknownAction):
        can(User(role="operator"), "hubs.view")


def test_every_route_declares_its_action(app):
    undeclared = [f"{method} {rule.rule}" for rule, method in all_routes(app)
                  if rule.endpoint not in PUBLIC | UNDECLARED and action_of(app, rule.endpoint, method) is None]
    assert not undeclared, f"routes without @requires(action): {undeclared}"


# -- the world the matrix walks ----------------------------------------------------------------------------------


@pytest.fixture
def world(ctx, client, create_institution, create_cluster, create_user, api_headers, run_worker):
    """Institutions A and B with a running hub each, their operations, releases their hubs run, rollouts, webhooks
    and people; a fleet cluster with an operation of its own; a member of hub A and one of hub B, and an invitation
    link to hub A.  Returns {kind: [(variant, object)]} where variant is "own" (A's), "foreign" (B's) or "fleet"."""
    a, b = create_institution("inst-a"), create_institution("inst-b")
    cluster = create_cluster("fast", backend="fake")
    operator = create_user("operator", email="ops@example.org")
    headers = api_headers(operator)
    hubs, ops = {}, {}
    for key, inst in (("a", a), ("b", b)):
        response = client.post("/api/v1/hubs", json={"slug": f"hub-{key}", "institution": inst.slug,
                                                     "cluster": "fast"}, headers=headers)
        assert response.status_code == 202, response.get_json()
        ops[key] = db.session.get(Operation, response.get_json()["operation"])
    run_worker()
    for key in ("a", "b"):
        hubs[key] = db.session.execute(db.select(Hub).filter_by(slug=f"hub-{key}")).unique().scalar_one()
        assert hubs[key].state == "running"
    releases = {}
    for key in ("a", "b", "new"):
        releases[key] = Release(name=f"rel-{key}", jupyterhub_version="5.2.1", state="ready", notes=f"notes {key}",
                                config={"environment": {"image": f"registry.example.org/{key}:1"}})
        db.session.add(releases[key])
    hubs["a"].release, hubs["b"].release = releases["a"], releases["b"]
    cluster_op = Operation(cluster=cluster, kind="cluster-plan", actor=operator.email, state="succeeded")
    fleet_rollout = Rollout(kind="release", release=releases["new"], target={"hubs": ["hub-a", "hub-b"]},
                            created_by=operator.email)
    config_rollout = Rollout(kind="config", institution_id=a.id, target={"institution": "inst-a"},
                             config={"auth": {}, "environment": {}}, created_by=operator.email)
    db.session.add_all([cluster_op, fleet_rollout, config_rollout])
    db.session.flush()
    db.session.add_all([RolloutHub(rollout_id=fleet_rollout.id, hub_id=hubs["a"].id, wave=0),
                        RolloutHub(rollout_id=fleet_rollout.id, hub_id=hubs["b"].id, wave=0),
                        RolloutHub(rollout_id=config_rollout.id, hub_id=hubs["a"].id, wave=0)])
    webhooks = {key: WebhookTarget(url=f"https://10.0.0.1/{key}", institution=inst, created_by=operator.email)
                for key, inst in (("own", a), ("foreign", b), ("fleet", None))}
    db.session.add_all(webhooks.values())
    db.session.commit()
    admin = create_user("institution_admin", institution=a, email="admin@a.example.org")
    people = {"own": create_user("institution_admin", institution=a), "fleet": operator,
              "foreign": create_user("institution_admin", institution=b)}
    member = create_user("member", email="member@a.example.org")
    held = {"own": memberships.grant(member, hub=hubs["a"], source="operator", created_by=operator),
            "foreign": memberships.grant(create_user("member"), hub=hubs["b"], source="operator")}
    db.session.commit()
    _, join_token = memberships.invite(operator, hubs["a"], 3600, 1000)
    return {
        "users": {"operator": operator, "institution_admin": admin, "member": member},
        "membership": list(held.items()),
        "join": [("link", join_token)],
        "hub": [("own", hubs["a"]), ("foreign", hubs["b"])],
        "institution": [("own", a), ("foreign", b)],
        "operation": [("own", ops["a"]), ("foreign", ops["b"]), ("fleet", cluster_op)],
        "cluster": [("fleet", cluster)],
        "release": [("own", releases["a"]), ("foreign", releases["b"]), ("fleet", releases["new"])],
        "rollout": [("own", config_rollout), ("fleet", fleet_rollout)],
        "webhook": list(webhooks.items()),
        "person": list(people.items()),
        "invitation": [(variant, invite(operator, role, slug)[0]) for variant, role, slug in (
            ("own", "institution_admin", "inst-a"), ("foreign", "institution_admin", "inst-b"),
            ("fleet", "operator", None))],
    }


def _token_row(user: User) -> ApiToken:
    new_api_token(user, name="walked")
    db.session.commit()
    return db.session.execute(db.select(ApiToken).filter_by(user_id=user.id, name="walked")
                              .order_by(ApiToken.id.desc()).limit(1)).scalar_one()


def kind_of(rule) -> str | None:
    """Which object the route loads from its URL (None: it names none)."""
    names = rule.arguments - {"action"}
    for argument, kind in (("rollout_id", "rollout"), ("operation_id", "operation"), ("person_id", "person"),
                           ("invitation_id", "invitation"), ("webhook_id", "webhook"), ("token_id", "token"),
                           ("membership_id", "membership"), ("user_id", "membership"), ("token", "join")):
        if argument in names:
            return kind
    if "slug" in names:
        return "institution" if "/institutions/" in rule.rule else "hub"
    if "name" in names:
        return "cluster" if "/clusters/" in rule.rule else "release"
    assert not names, f"the matrix does not know which object {rule.rule} loads; teach kind_of()"
    return None


def path_for(app, rule, obj) -> str:
    values = {}
    for name in rule.arguments:
        if name == "action":
            values[name] = next(verb for verb in VERBS if verb in rule._converters[name].items)
        elif name == "slug" and isinstance(obj, Rollout):
            values[name] = obj.hubs[0].hub.slug
        elif name == "slug" and isinstance(obj, Membership):
            values[name] = obj.hub.slug
        elif name == "user_id":
            values[name] = obj.user_id
        elif name == "token":
            values[name] = obj  # an invitation link's secret: it names no object the table knows
        elif name == "slug":
            values[name] = obj.slug
        elif name == "name":
            values[name] = obj.name
        elif name == "contact_id":
            values[name] = _contact_of(obj)
        else:
            values[name] = obj.id
    return app.url_map.bind("localhost").build(rule.endpoint, values)


def _contact_of(institution) -> int:
    """A new contact of ``institution`` for a route under its URL that names one (a contact is the institution's,
    and the table decides by the institution); each request gets its own, since an earlier one may remove it."""
    from console.models import Contact
    contact = Contact(institution_id=institution.id, kind="technical", name="Walked", email="walked@example.org")
    db.session.add(contact)
    db.session.commit()
    return contact.id


# Routes that take their object from the form rather than the URL: {endpoint: (field, kind)}.
FORM_OBJECTS = {"monitoring.add_webhook": ("institution", "webhook_scope"),
                "account.revoke_token": ("token_id", "token")}


def form_value(obj) -> str:
    return "" if obj is FLEET else getattr(obj, "slug", None) or str(obj.id)


def expected(user: User, action: str, obj) -> int | str:
    """What the table says: 404 (not visible), 403 (visible, not allowed) or "allowed"."""
    if action == SIGNED_IN:
        return "allowed"
    if isinstance(obj, str):
        obj = None
    if obj is not None and not sees(user, obj):
        return 404
    if isinstance(obj, db.Model) and inspect(obj).was_deleted:
        return 404  # an earlier request of the walk removed it for good (a person, say)
    return "allowed" if can(user, action, obj) else 403


# A well-formed body for each API write, so that only the table decides (an allowed one may still answer 409/422).
API_BODIES = {"/config": {"auth": {}, "environment": {}}, "/blackouts": [],
              "/invitations": {"expires_in": 3600, "max_uses": 1},
              "/idp": {"discovery_url": "https://idp.example.org", "client_id": "console"}}


def _order(request):
    """Reads first, deletions later, and last what a person does to their own session (it may end it)."""
    (rule, method, action), _ = request
    destructive = method == "DELETE" or rule.rule.rsplit("/", 1)[-1] in ("delete", "destroy", "remove", "<action>")
    return (action == SIGNED_IN, method != "GET", destructive, rule.rule)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_route_answers_as_the_table_says(app, client, world, login, api_headers, role):
    user = world["users"][role]
    headers = api_headers(user)
    # API tokens are their owner's alone, whatever the role: one of the user's own, one of somebody else's.
    other = world["users"]["operator" if role != "operator" else "institution_admin"]
    world["token"] = [("own", _token_row(user)), ("foreign", _token_row(other))]
    login(client, user)
    token = csrf_from(client.get("/").get_data(as_text=True))
    world["webhook_scope"] = [*world["institution"], ("fleet", FLEET)]
    requests = []
    for rule, method in all_routes(app):
        if rule.endpoint in PUBLIC | UNDECLARED:
            continue
        kind = kind_of(rule)
        field, form_kind = FORM_OBJECTS.get(rule.endpoint, (None, None))
        for variant, obj in (world[kind or form_kind] if kind or form_kind else [(None, None)]):
            requests.append(((rule, method, action_of(app, rule.endpoint, method)), (variant, obj)))
    mismatches, counts = [], {}
    for (rule, method, action), (variant, obj) in sorted(requests, key=_order):
        audited = db.session.query(AuditEvent).count()
        field = FORM_OBJECTS.get(rule.endpoint, (None,))[0]
        path = path_for(app, rule, obj if not field else None)
        want = expected(user, action, obj)
        if field and action != SIGNED_IN and action not in ROLES[user.role].actions:
            want = 403  # the object is in the form, not the URL: the role alone decides first (``requires``)
        if path.startswith("/api/") or path == "/metrics":
            body = next((b for suffix, b in API_BODIES.items() if path.endswith(suffix)), {})
            response = client.open(path, method=method, headers=headers, json=body if method != "GET" else None,
                                   query_string={"confirm": "not-the-name"} if method == "DELETE" else None)
        else:
            data = {"csrf_token": token, "confirm": "not-the-name", **({field: form_value(obj)} if field else {})}
            response = client.open(path, method=method, data=data)
        got = response.status_code
        if got in (302, 303) and response.headers["Location"].startswith("/login") and action != SIGNED_IN:
            got = "a redirect to log in"
        ok = got == want if want != "allowed" else got not in (401, 403, 404, "a redirect to log in") and got < 500
        counts[want] = counts.get(want, 0) + 1
        if not ok:
            mismatches.append(f"{method} {path} ({variant or 'no object'}, {action}): want {want}, got {got}")
        elif want != "allowed" and db.session.query(AuditEvent).count() != audited:
            # every change is audited, so a refused request that left an audit event changed something
            mismatches.append(f"{method} {path} ({variant or 'no object'}, {action}): refused but changed something")
    assert not mismatches, f"{role}: " + "\n".join(mismatches)
    # The walk did ask what it should: every outcome of the table occurs for an institution admin.
    assert counts.get("allowed", 0) >= (5 if role == "member" else 20)
    if role in ("institution_admin", "member"):
        assert counts.get(403, 0) >= 10 and counts.get(404, 0) >= 20


# -- what an institution admin reads -----------------------------------------------------------------------------


def test_lists_hold_only_what_the_user_may_see(client, world, login, api_headers):
    admin = world["users"]["institution_admin"]
    headers = api_headers(admin)
    login(client, admin)
    page = client.get("/").get_data(as_text=True)
    assert "hub-a" in page and "hub-b" not in page
    assert [h["slug"] for h in client.get("/api/v1/hubs", headers=headers).get_json()] == ["hub-a"]
    assert [i["slug"] for i in client.get("/api/v1/institutions", headers=headers).get_json()] == ["inst-a"]
    institutions = client.get("/institutions").get_data(as_text=True)
    assert "inst-a" in institutions and "inst-b" not in institutions
    alerts = client.get("/alerts").get_data(as_text=True)
    assert {key for key, hook in world["webhook"] if f'id="webhook-{hook.id}"' in alerts} == {"own"}


def test_institution_admins_read_only_names_and_notes_of_their_hubs_releases(client, world, api_headers):
    admin = api_headers(world["users"]["institution_admin"])
    listed = client.get("/api/v1/releases", headers=admin).get_json()
    assert listed == [{"name": "rel-a", "notes": "notes a"}]
    assert client.get("/api/v1/releases/rel-a", headers=admin).get_json() == {"name": "rel-a", "notes": "notes a"}
    assert client.get("/api/v1/releases/rel-b", headers=admin).status_code == 404
    operator = api_headers(world["users"]["operator"])
    full = client.get("/api/v1/releases/rel-b", headers=operator).get_json()
    assert full["config"] == {"environment": {"image": "registry.example.org/b:1"}}
    assert [r["name"] for r in client.get("/api/v1/releases", headers=operator).get_json()] == \
        ["rel-new", "rel-b", "rel-a"]


def test_operator_emails_are_not_shown_to_institution_admins(client, world, api_headers, login):
    admin = world["users"]["institution_admin"]
    own_op = dict(world["operation"])["own"]
    as_admin = client.get(f"/api/v1/operations/{own_op.id}", headers=api_headers(admin)).get_json()
    assert as_admin["actor"] == "an operator"
    as_operator = client.get(f"/api/v1/operations/{own_op.id}", headers=api_headers(world["users"]["operator"]))
    assert as_operator.get_json()["actor"] == "ops@example.org"
    # A colleague of the same institution is named; pages say "an operator" wherever an operator acted.
    restart = client.post("/api/v1/hubs/hub-a/restart", headers=api_headers(admin)).get_json()["operation"]
    assert client.get(f"/api/v1/operations/{restart}", headers=api_headers(admin)).get_json()["actor"] == \
        "admin@a.example.org"
    login(client, admin)
    for page in ("/hubs/hub-a", f"/operations/{own_op.id}", "/institutions/inst-a", "/alerts"):
        html = client.get(page).get_data(as_text=True)
        assert "ops@example.org" not in html, page
    assert "an operator" in client.get("/hubs/hub-a").get_data(as_text=True)


def test_pages_offer_only_what_the_table_allows(client, world, login):
    login(client, world["users"]["institution_admin"])
    hub = client.get("/hubs/hub-a").get_data(as_text=True)
    assert "/hubs/hub-a/restart" in hub and "/hubs/hub-a/delete" not in hub and "release-policy" not in hub
    assert 'href="/clusters' not in client.get("/").get_data(as_text=True)
    institution = client.get("/institutions/inst-a").get_data(as_text=True)
    assert "New hub" not in institution and ">Policy<" in institution and "Edit login and environment" in institution
