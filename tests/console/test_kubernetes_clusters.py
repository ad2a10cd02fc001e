"""The console's side of Kubernetes clusters: onboarding checks, hub creation refused until they pass, the dry run
of a hub's creation, a hub's manifests, and what releases must name for Kubernetes hubs.

What stands in for a cluster: the HTTP API emulator of ``tests/k8s/emulator.py`` (kmock with our fidelity layer),
reached by the real ``kubernetes`` client inside the real backend (``clusters/kubernetes.py``), with or without the
Flux CRDs and a default StorageClass.  Clusters are inserted as rows (registration wants an https server; the
emulator serves http) and checked through the API and the same worker the other console tests run.
"""
from __future__ import annotations

import socket

import pytest

import clusters.kubernetes
from clusters.base import BackendError
from clusters.environments import installed_jupyterhub
from console.crypto import encrypt_json
from console.extensions import db
from console.models import AuditEvent, Cluster, Hub, Operation, Release, utcnow
from tests.browser import log_in, watched
from tests.conftest import csrf_from
from tests.k8s.emulator import flux_resources

SECRET = "k8s-client-s3cret-4e1d"
OIDC = {"authenticator_class": "generic-oauth", "client_id": "hub-client", "client_secret": SECRET,
        "authorize_url": "https://idp.north.edu/auth", "token_url": "https://idp.north.edu/token",
        "userdata_url": "https://idp.north.edu/me", "allowed_groups": ["students"], "manage_groups": True}
FLUX_INSTALL = "flux install --components=source-controller,helm-controller"


@pytest.fixture
def operator(create_user):
    return create_user("operator")


@pytest.fixture
def headers(operator, api_headers):
    return api_headers(operator)


@pytest.fixture
def north(create_institution, client, headers):
    """Institution north, whose login (generic OAuth) has a client secret that must never be shown."""
    institution = create_institution("north", "North College")
    answer = client.put("/api/v1/institutions/north/config", json={"auth": OIDC, "environment": {}},
                        headers=headers)
    assert answer.status_code == 200, answer.get_json()
    return institution


def kube_cluster(emulator, name: str = "campus", state: str = "registered", **columns) -> Cluster:
    """A registered Kubernetes cluster whose kubeconfig reaches ``emulator``, as registration stores it."""
    row = Cluster(name=name, provider=None, backend="kubernetes", state=state, settings={"server": emulator.url},
                  kubeconfig=encrypt_json({"kubeconfig": emulator.kubeconfig()}), **columns)
    db.session.add(row)
    db.session.commit()
    return row


def check(client, headers, run_worker, name: str = "campus") -> dict:
    """Ask for a check through the API, let the worker run it, return the cluster as the API shows it."""
    queued = client.post(f"/api/v1/clusters/{name}/check", headers=headers)
    assert queued.status_code == 202, queued.get_json()
    assert client.get(f"/api/v1/clusters/{name}", headers=headers).get_json()["state"] == "checking"
    run_worker()
    op = client.get(f"/api/v1/operations/{queued.get_json()['operation']}", headers=headers).get_json()
    assert op["state"] == "succeeded" and op["kind"] == "cluster-check", op
    return client.get(f"/api/v1/clusters/{name}", headers=headers).get_json()


def rows() -> dict[str, int]:
    return {model.__name__: db.session.query(model).count() for model in (Hub, Operation, AuditEvent, Cluster)}


# -- onboarding ----------------------------------------------------------------------------------------------------


def test_a_cluster_with_flux_and_a_default_storage_class_passes_and_takes_hubs(
        client, headers, operator, north, kube_api_factory, run_worker, login):
    emulator = kube_api_factory(flux=True, storage_class=True)
    kube_cluster(emulator)
    refused = client.post("/api/v1/hubs", json={"slug": "north-k8s", "institution": "north", "cluster": "campus"},
                          headers=headers)
    assert refused.status_code == 422
    assert refused.get_json()["errors"]["json"]["cluster"] == [
        "Cluster 'campus' has not passed its onboarding check: not checked yet."]

    found = check(client, headers, run_worker)
    assert found["state"] == "ready" and found["checked_at"]
    names = [c["name"] for c in found["checks"]]
    assert names[0] == "API reachable" and {"Flux HelmRelease v2 served", "a default StorageClass"} <= set(names)
    assert all(c["ok"] for c in found["checks"]), found["checks"]
    assert any(r.path.startswith("/apis/helm.toolkit.fluxcd.io") for r in emulator.requests)  # it did ask

    login(client, operator)
    page = client.get("/clusters/campus").get_data(as_text=True)
    assert page.count('data-ok="true"') == len(names) and 'data-ok="false"' not in page
    assert "Every check passed: the cluster takes hubs." in page and "Last checked " in page
    assert "Check again" in page

    created = client.post("/api/v1/hubs", json={"slug": "north-k8s", "institution": "north", "cluster": "campus"},
                          headers=headers)
    assert created.status_code == 202, created.get_json()


def test_a_cluster_without_flux_needs_setup_says_how_and_refuses_hubs_until_fixed(
        client, headers, operator, north, kube_api_factory, run_worker, login):
    emulator = kube_api_factory(flux=False, storage_class=True)
    kube_cluster(emulator)
    found = check(client, headers, run_worker)
    assert found["state"] == "needs-setup"
    failed = {c["name"]: c for c in found["checks"] if not c["ok"]}
    assert set(failed) == {"Flux HelmRelease v2 served", "Flux HelmRepository v1 served"}, found["checks"]
    assert failed["Flux HelmRelease v2 served"]["fix"] == FLUX_INSTALL
    assert "not served" in failed["Flux HelmRelease v2 served"]["detail"]

    refused = client.post("/api/v1/hubs", json={"slug": "north-k8s", "institution": "north", "cluster": "campus"},
                          headers=headers)
    assert refused.status_code == 422
    message = refused.get_json()["errors"]["json"]["cluster"][0]
    assert "Flux HelmRelease v2 served, Flux HelmRepository v1 served failed" in message
    assert db.session.query(Hub).count() == 0

    login(client, operator)
    page = client.get("/clusters/campus").get_data(as_text=True)
    assert page.count('data-ok="false"') == 2 and "✗" in page and "✓" in page
    assert f'<code class="command">{FLUX_INSTALL}</code>' in page
    assert "Hubs are refused until every check passes." in page
    # The list says it too.
    assert 'data-status="needs-setup"' in client.get("/clusters").get_data(as_text=True)

    # The operator installs Flux (the emulator starts serving its kinds) and checks again from the page, by htmx.
    for path, info in flux_resources().items():
        emulator.api.resources[path] = info
    token = csrf_from(page)
    fragment = client.post("/clusters/campus/check", data={"csrf_token": token}, headers={"HX-Request": "true"})
    text = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and text.lstrip().startswith('<div id="cluster-status"')
    assert 'data-status="checking"' in text and 'hx-trigger="every 2s"' in text  # the fragment follows the check
    again = client.post("/clusters/campus/check", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert again.status_code == 200
    assert db.session.query(Operation).filter_by(kind="cluster-check").count() == 2  # a double click: one check
    run_worker()
    after = client.get("/api/v1/clusters/campus", headers=headers).get_json()
    assert after["state"] == "ready" and all(c["ok"] for c in after["checks"])
    assert client.post("/api/v1/hubs", json={"slug": "north-k8s", "institution": "north", "cluster": "campus"},
                       headers=headers).status_code == 202


def test_an_unreachable_or_failing_cluster_records_why(client, headers, create_user, kube_api_factory, run_worker,
                                                      monkeypatch, login, operator):
    """Unreachable: a kubeconfig naming a port where nothing listens.  Failing: the backend's ``onboard`` replaced
    by one that raises, the one stand-in here, for the worker's guard against a backend error."""
    with socket.socket() as probe:  # a free port, closed again: nothing answers there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Nowhere:
        url = f"http://127.0.0.1:{port}"

        def kubeconfig(self):
            return (f"apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: '{self.url}'}}}}]\n"
                    "users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
                    "current-context: c\n")

    kube_cluster(Nowhere(), "offline")
    found = check(client, headers, run_worker, "offline")
    assert found["state"] == "needs-setup"
    assert found["checks"][0]["name"] == "API reachable" and not found["checks"][0]["ok"]
    assert found["checks"][0]["fix"]

    def broken(self):
        raise BackendError("the cluster's API refused the credentials (401)")

    monkeypatch.setattr(clusters.kubernetes.KubernetesBackend, "onboard", broken)
    kube_cluster(kube_api_factory(), "refusing")
    found = check(client, headers, run_worker, "refusing")
    assert found["state"] == "needs-setup"
    assert [(c["name"], c["ok"]) for c in found["checks"]] == [("API reachable", False)]
    assert "refused the credentials (401)" in found["checks"][0]["detail"] and found["checks"][0]["fix"]
    login(client, operator)
    page = client.get("/clusters/refusing").get_data(as_text=True)
    assert "refused the credentials (401)" in page and 'data-ok="false"' in page


@pytest.mark.parametrize("fix,parts", [
    (FLUX_INSTALL, ("", FLUX_INSTALL)),
    ("mark one default: kubectl patch storageclass <name> -p '{}'",
     ("mark one default", "kubectl patch storageclass <name> -p '{}'")),
    ("bind the kubeconfig's user to a ClusterRole that may create namespaces",
     ("bind the kubeconfig's user to a ClusterRole that may create namespaces", "")),
    ("", ("", "")),
])
def test_a_fix_shows_its_command_apart(fix, parts):
    from console.views.clusters import fix_parts

    assert fix_parts(fix) == parts


def test_only_kubernetes_clusters_are_checked_and_a_destroying_one_is_not(client, headers, create_cluster,
                                                                        kube_api_factory):
    create_cluster("fast", backend="fake")
    refused = client.post("/api/v1/clusters/fast/check", headers=headers)
    assert refused.status_code == 409 and "only Kubernetes clusters" in refused.get_json()["message"]
    kube_cluster(kube_api_factory(), "leaving", state="destroying")
    refused = client.post("/api/v1/clusters/leaving/check", headers=headers)
    assert refused.status_code == 409 and "cannot be checked" in refused.get_json()["message"]
    assert db.session.query(Operation).count() == 0


def test_registration_queues_the_check(client, headers):
    kubeconfig = ("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://k8s.example.edu'}}]\n"
                  "users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
                  "current-context: c\n")
    made = client.post("/api/v1/clusters/register", json={"name": "remote", "kubeconfig": kubeconfig},
                       headers=headers)
    assert made.status_code == 201 and made.get_json()["state"] == "checking"
    assert made.get_json()["checks"] == [] and made.get_json()["checked_at"] is None
    op = db.session.execute(db.select(Operation).filter_by(kind="cluster-check")).unique().scalar_one()
    assert op.cluster.name == "remote" and op.state == "queued"


def test_a_provisioned_cloud_cluster_is_checked_after_its_apply(app, ctx, kube_api_factory):
    """``record_outputs`` after a cloud apply: the cluster is not ready at once, its check is queued."""
    from console.services import clusters as cluster_service

    emulator = kube_api_factory()
    row = Cluster(name="cloud", provider="gke", backend="kubernetes", state="applying", variables={},
                  settings={})
    db.session.add(row)
    db.session.commit()
    cluster_service.record_outputs(row, {"endpoint": {"value": emulator.url, "sensitive": False},
                                         "kubeconfig": {"value": emulator.kubeconfig(), "sensitive": True}},
                                   "ops@example.org")
    db.session.commit()
    assert row.state == "checking" and row.settings["server"] == emulator.url
    op = db.session.execute(db.select(Operation).filter_by(kind="cluster-check")).unique().scalar_one()
    assert op.cluster_id == row.id and op.actor == "ops@example.org"


# -- dry run ---------------------------------------------------------------------------------------------------------


def test_a_dry_run_shows_the_objects_and_creates_nothing(client, headers, north, kube_api_factory):
    emulator = kube_api_factory(flux=False)  # neither onboarded nor even checked: a dry run is still allowed
    kube_cluster(emulator)
    before, asked = rows(), len(emulator.requests)
    answer = client.post("/api/v1/hubs?dry_run=true", json={"slug": "north-k8s", "institution": "north",
                                                             "cluster": "campus"}, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["slug"], body["institution"], body["cluster"], body["backend"]) == (
        "north-k8s", "north", "campus", "kubernetes")
    kinds = [obj["kind"] for obj in body["objects"]]
    assert kinds[0] == "Namespace" and kinds[-1] == "HelmRelease" and "Secret" in kinds
    secret = next(obj for obj in body["objects"] if obj["kind"] == "Secret")
    assert set((secret.get("stringData") or secret.get("data") or {}).values()) == {"********"}
    assert SECRET not in answer.get_data(as_text=True)
    assert rows() == before  # no hub, no operation, no audit entry
    assert len(emulator.requests) == asked  # and the cluster was not asked anything
    # A real create on the same cluster is refused: it has not passed onboarding.
    assert client.post("/api/v1/hubs", json={"slug": "north-k8s", "institution": "north", "cluster": "campus"},
                       headers=headers).status_code == 422


@pytest.mark.parametrize("body", [
    {"slug": "North Lab", "institution": "nowhere", "cluster": "campus"},
    {"slug": "x", "institution": "north", "cluster": "nope"},
    {"institution": "north"},
    {"slug": "north-k8s", "institution": "", "cluster": "campus"},
])
def test_a_dry_run_refuses_bad_input_exactly_as_a_create(client, headers, north, kube_api_factory, body):
    passed = [{"name": "API reachable", "ok": True, "detail": "", "fix": ""}]
    kube_cluster(kube_api_factory(), state="ready", checks=passed, checked_at=utcnow())  # onboarded: same rules
    created = client.post("/api/v1/hubs", json=body, headers=headers)
    dry = client.post("/api/v1/hubs?dry_run=true", json=body, headers=headers)
    assert created.status_code == dry.status_code == 422
    assert created.get_json() == dry.get_json()
    assert db.session.query(Hub).count() == 0


def test_a_dry_run_on_another_backend_shows_the_rendered_config(client, headers, north, create_cluster):
    create_cluster("fast", backend="fake")
    before = rows()
    answer = client.post("/api/v1/hubs?dry_run=true", json={"slug": "north-lab", "institution": "north",
                                                             "cluster": "fast"}, headers=headers)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["backend"] == "fake" and "objects" not in body
    assert body["config"]["GenericOAuthenticator"]["client_id"] == "hub-client"
    assert SECRET not in answer.get_data(as_text=True) and rows() == before


def test_institution_admins_may_not_dry_run(client, north, create_user, api_headers, kube_api_factory):
    kube_cluster(kube_api_factory())
    admin = api_headers(create_user("institution_admin", institution=north))
    assert client.post("/api/v1/hubs?dry_run=true", json={"slug": "north-k8s", "institution": "north",
                                                           "cluster": "campus"}, headers=admin).status_code == 403


# -- manifests -------------------------------------------------------------------------------------------------------


@pytest.fixture
def k8s_hub(client, headers, north, kube_api_factory, run_worker):
    """Hub north-k8s on an onboarded emulated cluster (its creation queued, not run); returns the emulator."""
    emulator = kube_api_factory()
    kube_cluster(emulator)
    assert check(client, headers, run_worker)["state"] == "ready"
    assert client.post("/api/v1/hubs", json={"slug": "north-k8s", "institution": "north", "cluster": "campus"},
                       headers=headers).status_code == 202
    return emulator


def test_operators_read_a_hubs_manifests_without_the_cluster_being_asked(client, headers, k8s_hub, operator, login):
    asked = len(k8s_hub.requests)
    answer = client.get("/api/v1/hubs/north-k8s/manifests", headers=headers)
    assert answer.status_code == 200
    body = answer.get_json()
    hub_id = db.session.execute(db.select(Hub.id).filter_by(slug="north-k8s")).scalar_one()
    assert body["hub"] == "north-k8s"
    release = next(obj for obj in body["objects"] if obj["kind"] == "HelmRelease")
    assert f"-{hub_id}-" in release["metadata"]["name"]  # named by the hub's own id
    assert release["spec"]["valuesFrom"] and SECRET not in str(release)
    assert SECRET not in answer.get_data(as_text=True) and "********" in answer.get_data(as_text=True)
    assert len(k8s_hub.requests) == asked

    login(client, operator)
    hub_page = client.get("/hubs/north-k8s").get_data(as_text=True)
    assert 'href="/hubs/north-k8s/manifests"' in hub_page
    page = client.get("/hubs/north-k8s/manifests")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "kind: HelmRelease" in text and SECRET not in text
    assert "GET /api/v1/hubs/north-k8s/manifests" in text
    assert len(k8s_hub.requests) == asked


def test_manifests_are_for_operators_and_kubernetes_hubs_only(client, headers, k8s_hub, north, create_institution,
                                                             create_user, api_headers, create_cluster, login):
    admin = create_user("institution_admin", institution=north)
    assert client.get("/api/v1/hubs/north-k8s/manifests", headers=api_headers(admin)).status_code == 403
    south = create_institution("south")
    other = create_user("institution_admin", institution=south)
    assert client.get("/api/v1/hubs/north-k8s/manifests", headers=api_headers(other)).status_code == 404
    login(client, admin)
    hub_page = client.get("/hubs/north-k8s").get_data(as_text=True)
    assert "/manifests" not in hub_page
    assert client.get("/hubs/north-k8s/manifests").status_code == 403

    create_cluster("fast", backend="fake")
    assert client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "fast"},
                       headers=headers).status_code == 202
    refused = client.get("/api/v1/hubs/north-lab/manifests", headers=headers)
    assert refused.status_code == 409 and "only hubs on Kubernetes clusters" in refused.get_json()["message"]


# -- releases --------------------------------------------------------------------------------------------------------


def release(**fields) -> dict:
    return {"name": "2026.12", "jupyterhub_version": installed_jupyterhub(), **fields}


@pytest.mark.parametrize("fields,errors", [
    ({"chart_version": "4.2", "hub_image": "quay.io/jupyterhub/k8s-hub"}, {"chart_version", "hub_image"}),
    ({"chart_version": "v4.2.0"}, {"chart_version"}),
    ({"chart_version": "4.2.0", "hub_image": "Quay.io/JupyterHub/k8s-hub:4.2.0"}, {"hub_image"}),
    ({"hub_image": "quay.io/jupyterhub/k8s-hub:"}, {"hub_image"}),
])
def test_releases_refuse_a_malformed_chart_version_or_hub_image(client, headers, fields, errors):
    answer = client.post("/api/v1/releases", json=release(**fields), headers=headers)
    assert answer.status_code == 422 and set(answer.get_json()["errors"]["json"]) == errors
    assert db.session.query(Release).count() == 0


@pytest.mark.parametrize("chart_version,hub_image", [
    ("4.2.0", "quay.io/jupyterhub/k8s-hub:4.2.0"),
    ("4.3.0-0.dev.git.7208.h3e1ba6b4", "registry.example.edu:5000/hubs/k8s-hub:4.3.0-0.dev.git.7208.h3e1ba6b4"),
    ("", ""),  # a release for local hubs only
])
def test_releases_keep_a_chart_version_and_hub_image(client, headers, chart_version, hub_image):
    answer = client.post("/api/v1/releases", json=release(chart_version=chart_version, hub_image=hub_image),
                         headers=headers)
    assert answer.status_code == 201, answer.get_json()
    assert (answer.get_json()["chart_version"], answer.get_json()["hub_image"]) == (chart_version, hub_image)


def test_the_release_form_takes_the_chart_version_and_hub_image(client, operator, login):
    login(client, operator)
    page = client.get("/releases").get_data(as_text=True)
    assert 'name="chart_version"' in page and 'name="hub_image"' in page
    token = csrf_from(page)
    bad = client.post("/releases", data={"csrf_token": token, **release(chart_version="four")})
    assert bad.status_code == 422 and 'id="chart_version-error"' in bad.get_data(as_text=True)
    kubernetes = {"chart_version": "4.2.0", "hub_image": "quay.io/jupyterhub/k8s-hub:4.2.0"}
    good = client.post("/releases", data={"csrf_token": token, **release(**kubernetes)})
    assert good.status_code == 302
    stored = db.session.execute(db.select(Release).filter_by(name="2026.12")).scalar_one()
    assert (stored.chart_version, stored.hub_image) == ("4.2.0", "quay.io/jupyterhub/k8s-hub:4.2.0")


def test_a_release_without_chart_version_is_not_given_to_kubernetes_hubs(client, headers, k8s_hub, create_cluster):
    create_cluster("fast", backend="fake")
    assert client.post("/api/v1/hubs", json={"slug": "north-lab", "institution": "north", "cluster": "fast"},
                       headers=headers).status_code == 202
    assert client.post("/api/v1/releases", json=release(), headers=headers).status_code == 201
    # A new hub on Kubernetes would start on it: refused, naming the release.
    refused = client.post("/api/v1/hubs", json={"slug": "north-two", "institution": "north", "cluster": "campus"},
                          headers=headers)
    assert refused.status_code == 422
    assert "Release 2026.12 names no chart version" in refused.get_json()["errors"]["json"]["cluster"][0]
    # A local hub takes it as before.
    assert client.post("/api/v1/hubs", json={"slug": "north-lab-2", "institution": "north", "cluster": "fast"},
                       headers=headers).status_code == 202
    # A rollout of it skips the Kubernetes hub, saying why; with only that hub it is refused.
    alone = client.post("/api/v1/rollouts", json={"release": "2026.12", "target": {"hubs": ["north-k8s"]}},
                        headers=headers)
    assert alone.status_code == 422 and "names no chart version" in alone.get_json()["errors"]["json"]["target"][0]
    both = client.post("/api/v1/rollouts", json={"release": "2026.12", "target": {"institution": "north"}},
                       headers=headers)
    assert both.status_code == 201, both.get_json()
    states = {item["hub"]: (item["state"], item["note"]) for item in both.get_json()["hubs"]}
    assert states["north-k8s"][0] == "skipped" and "names no chart version" in states["north-k8s"][1]
    assert states["north-lab"][0] == "pending"


# -- in a browser ----------------------------------------------------------------------------------------------------


def test_the_cluster_page_shows_its_checks_and_checks_again_in_chromium(
        client, headers, operator, kube_api_factory, run_worker, live_server, browser):
    """Chromium on the console's cluster page (the emulator stands in for the cluster): the failed checks with
    their fix, "Check again" through htmx, the page following the check and showing the new result, and no
    Content-Security-Policy violation or script error on the way."""
    emulator = kube_api_factory(flux=False)
    kube_cluster(emulator)
    assert check(client, headers, run_worker)["state"] == "needs-setup"
    page = browser.new_page()
    problems = watched(page)
    log_in(page, live_server, operator.email)
    page.goto(f"{live_server}/clusters/campus")
    assert page.locator("li.check[data-ok=false]").count() == 2
    assert page.locator("li.check[data-ok=true]").count() >= 2
    assert page.locator("code.command").first.inner_text() == FLUX_INSTALL
    assert page.locator("code.command").first.evaluate("e => getComputedStyle(e).fontFamily").find("mono") >= 0

    for path, info in flux_resources().items():  # the operator installed Flux
        emulator.api.resources[path] = info
    with page.expect_response(lambda r: r.url.endswith("/clusters/campus/check") and r.request.method == "POST"):
        page.get_by_role("button", name="Check again").click()
    page.wait_for_selector('#cluster-status h1 [data-status="checking"]')
    run_worker()
    # the fragment polls every 2 s; once the check ended the whole page reloads with its result
    page.wait_for_selector('#cluster-status h1 [data-status="ready"]', timeout=15000)
    page.wait_for_selector("li.check")
    assert page.locator("li.check[data-ok=false]").count() == 0
    assert "Every check passed" in page.inner_text("#onboarding")
    assert problems == [], problems
