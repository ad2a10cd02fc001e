"""Property-based: requests generated from the console's own OpenAPI document (schemathesis), valid and not, sent
with an operator's and an institution admin's token, never get a 5xx.

Bounded and repeatable: a fixed number of examples per operation, derandomized (the same requests every run), a
fresh database per run.  The fleet is on the fake backend and no worker runs, so a request that queues work (a
restart, a deletion) only queues it.
"""
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXAMPLES = 30


@pytest.fixture
def config(config):
    # Generated lists of restarts must not hit the fair-share bound before they reach anything else.
    return {**config, "MAX_PENDING_OPERATIONS": 10000}


@pytest.fixture
def tokens(create_institution, create_cluster, create_user, api_headers, client, run_worker, ctx):
    north = create_institution("north")
    create_institution("south")
    create_cluster("fast", backend="fake")
    operator = create_user("operator")
    headers = api_headers(operator)
    for slug, institution in (("north-lab", "north"), ("south-lab", "south")):
        assert client.post("/api/v1/hubs", json={"slug": slug, "institution": institution, "cluster": "fast"},
                           headers=headers).status_code == 202
    run_worker()
    release = client.post("/api/v1/releases", json={"name": "r1", "jupyterhub_version": "5.3.0"}, headers=headers)
    assert release.status_code == 201, release.get_json()
    client.post("/api/v1/rollouts", json={"release": "r1", "target": {"institution": "north"}}, headers=headers)
    return {"operator": headers, "institution admin": api_headers(create_user("institution_admin",
                                                                                institution=north))}


# Path parameters are drawn from the objects that exist half the time (else generated): a random slug only ever
# reaches a 404.
KNOWN = {"slug": ["north-lab", "south-lab"], "institution slug": ["north", "south"], "name": ["fast", "r1"],
         "operation_id": [1, 2], "rollout_id": [1], "token_id": [1, 2]}


def known_values(operation) -> dict:
    names = {}
    for parameter in operation.path_parameters:
        key = "institution slug" if parameter.name == "slug" and "/institutions/" in operation.path else \
            parameter.name
        if key in KNOWN:
            names[parameter.name] = st.sampled_from(KNOWN[key])
    return names


def test_no_request_gets_a_server_error(app, tokens):
    """Every operation of the document, each with its own derandomized Hypothesis run.  (Schemathesis' pytest
    plugin is not used: its subtests do not run under this pytest; its strategies are.)  Revoking a token is left
    out: it would revoke the tokens the run uses."""
    api = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, headers=tokens["operator"])
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 25
    for operation in operations:
        if operation.method.upper() == "DELETE" and operation.path.startswith("/api/v1/tokens"):
            continue
        known = known_values(operation)

        @given(case=operation.as_strategy(), use_known=st.booleans(), data=st.data())
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def no_server_error(case, use_known, data):
            if use_known:
                for name, values in known.items():
                    case.path_parameters[name] = data.draw(values)
            for role, headers in tokens.items():
                response = case.call(headers=headers)
                assert response.status_code < 500, (
                    f"{role}: {case.method} {case.formatted_path} {case.query} {case.body!r:.300} -> "
                    f"{response.status_code} {response.text[:300]}")

        no_server_error()
