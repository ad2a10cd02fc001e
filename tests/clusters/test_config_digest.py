"""The configuration digest both sides of drift compute: the console from the spec, a local hub from settings.json."""
import json

from clusters.base import HubSpec, wanted_digest
from clusters.config_digest import canonical, settings_digest
from clusters.local import LocalBackend
from clusters.local_files import write_hub_config
from tenants.layering import RELEASE_DEFAULTS, layered
from tenants.render import render_local, split_secrets


def spec_of(environment=None) -> HubSpec:
    config = layered(RELEASE_DEFAULTS, None, {"auth": {"authenticator_class": "dummy", "allow_all": True},
                                              "environment": {"cull_timeout": 600, **(environment or {})}}, None)
    public, secret = split_secrets(render_local(config, {"password": "demo-password"}))
    return HubSpec(slug="north-lab", institution="north", config=public, secrets=secret)


def written(tmp_path, spec: HubSpec) -> dict:
    """The settings.json the local backend writes for ``spec`` (ports, paths, tokens of this machine included)."""
    backend = LocalBackend(root=str(tmp_path / "hubs"), port_range=(23400, 23499))
    hub_dir = tmp_path / "hubs" / spec.slug
    hub_dir.mkdir(parents=True)
    write_hub_config(hub_dir)
    ports = {"public": 23400, "proxy_api": 23401, "hub": 23402}
    return json.loads(json.dumps(backend._settings(spec, hub_dir, ports, "t" * 64, "c" * 64, "/usr/bin/python3")))


def test_the_settings_a_local_hub_loads_digest_as_the_spec_it_was_written_from(tmp_path):
    spec = spec_of()
    settings = written(tmp_path, spec)
    assert settings["JupyterHub"]["port"] == 23400 and "services" in settings["JupyterHub"]
    assert settings_digest(settings) == LocalBackend.config_digest(spec) == wanted_digest("local", spec)
    assert (tmp_path / "hubs" / "north-lab" / "config_digest.py").stat().st_mode & 0o777 == 0o600


def test_the_machine_part_is_left_out_and_everything_else_counts(tmp_path):
    settings = written(tmp_path, spec_of())
    moved = json.loads(json.dumps(settings))
    moved["JupyterHub"].update(port=23500, hub_port=23502)
    moved["ConfigurableHTTPProxy"]["api_url"] = "http://127.0.0.1:23501"
    assert settings_digest(moved) == settings_digest(settings)
    edited = json.loads(json.dumps(settings))
    edited["Spawner"]["default_url"] = "/tree"
    assert settings_digest(edited) != settings_digest(settings)
    assert settings_digest(written(tmp_path / "other", spec_of({"cpu_limit": 1}))) != settings_digest(settings)
    assert canonical({"Spawner": {"environment": {"HUBFLEET_HUB_DIR": "/x"}}, "OnePersonSpawner": {"a": 1}}) == {}


def test_a_kubernetes_hub_reports_the_digest_of_the_values_its_helmrelease_holds():
    from clusters.k8s_manifests import hub_objects
    from clusters.kubernetes import KubernetesBackend

    spec = HubSpec(slug="north-lab", institution="north", uid="7", chart_version="4.2.0",
                   config={"singleuser": {"defaultUrl": "/lab"}}, secrets={"hub": {"cookieSecret": "s"}})
    release = next(obj for obj in hub_objects(spec, "https://hub.jupyter.org/helm-chart/")
                   if obj["kind"] == "HelmRelease")
    state = {"namespace": "hub-7", "release": "hub", "chart_version": "4.2.0"}
    assert KubernetesBackend.classify(state, release, []).config_digest == wanted_digest("kubernetes", spec)
    release["spec"]["values"]["singleuser"]["defaultUrl"] = "/tree"  # kubectl edit, behind the console's back
    assert KubernetesBackend.classify(state, release, []).config_digest != wanted_digest("kubernetes", spec)


def test_a_kubernetes_hub_edited_in_the_cluster_drifts_until_deployed_again(kube_api):
    from clusters.kubernetes import KubernetesBackend
    from tests.clusters.test_kubernetes_backend import SPEC, act_as_flux

    with KubernetesBackend(kubeconfig=kube_api.kubeconfig()) as backend:
        state = backend.deploy(SPEC, {}, lambda line: None)
        act_as_flux(kube_api, state)
        assert backend.status(state).config_digest == wanted_digest("kubernetes", SPEC)
        # kubectl edit, behind the console's back, of a value the console sets: Helm would install it
        kube_api.patch("HelmRelease", state["release"], state["namespace"],
                       {"spec": {"values": {"singleuser": {"networkPolicy": {"enabled": False}}}}})
        assert backend.status(state).config_digest != wanted_digest("kubernetes", SPEC)
        # what a reconcile does: server-side apply takes the console's fields back (a field only someone else
        # added stays theirs, and the hub stays drifted: docs/fleet-as-code.md)
        state = backend.deploy(SPEC, state, lambda line: None)
        assert backend.statuses([state])[0].config_digest == wanted_digest("kubernetes", SPEC)
