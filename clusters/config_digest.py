"""The digest of a hub's configuration: one function for what the console would deploy and what a hub runs.

Drift is a difference between the two, so both sides must compute the digest the same way.  The console computes it
from the configuration it renders for a hub (``HubSpec.config`` with its secrets); a local hub computes it at start
from the ``settings.json`` it loaded.  That file also holds what the local backend adds for this machine only (ports,
paths, the console's own service tokens, the spawner that keeps users apart), known only once the hub is placed and
never part of what an institution or an operator configures: :func:`canonical` drops it, so both sides digest the
same document.  A local hub runs this module from its own directory, with its own JupyterHub environment, where
Hubfleet is not installed: standard library only (``clusters/local_files.py`` copies it there).

The digest covers secret values too (a client secret changed behind the console's back is drift), as a SHA-256 over
the whole document: it tells nothing of a secret of the usual, generated length.
"""
import hashlib
import json

MARKER = "HUBFLEET_HUB_DIR"  # as clusters/local.py marks every process of a hub
# Settings the local backend writes for this machine, by traitlets section, and whole sections of its own.
MACHINE = {
    "JupyterHub": frozenset({"ip", "port", "hub_ip", "hub_port", "db_url", "cookie_secret_file", "pid_file",
                             "upgrade_db", "spawner_class"}),
    "OAuthenticator": frozenset({"oauth_callback_url"}),
    "ConfigurableHTTPProxy": frozenset({"api_url", "command", "should_start"}),
    "Spawner": frozenset({"cmd"}),
}
MACHINE_SECTIONS = frozenset({"SystemAccountSpawner", "OnePersonSpawner"})
# The console's own services and roles on every local hub (clusters/local.py SERVICE_NAME, CHECK_SERVICE).
CONSOLE_SERVICES = frozenset({"hubfleet", "hubfleet-check"})
CONSOLE_ROLES = frozenset({"hubfleet-console", "hubfleet-check"})
# Where a local hub records the digest of the settings it loaded, with its process id (clusters/local.py reads it).
RECORD = "running-config.json"


def _unmarked(environment):
    return {k: v for k, v in environment.items() if k != MARKER} if isinstance(environment, dict) else environment


def _pruned(node):
    """``node`` without empty objects and lists (a section the machine part emptied, an empty environment)."""
    if isinstance(node, dict):
        kept = {key: _pruned(value) for key, value in node.items()}
        return {key: value for key, value in kept.items() if value not in ({}, [])}
    if isinstance(node, list):
        return [_pruned(value) for value in node]
    return node


def canonical(settings):
    """The hub's own configuration in ``settings`` (traitlets sections): the machine's part left out, values as JSON
    reads them back, empty objects and lists dropped.  Pure; the same for the rendered config and for the
    ``settings.json`` the local backend writes from it."""
    settings = json.loads(json.dumps(settings))
    kept = {}
    for section, values in settings.items():
        if section in MACHINE_SECTIONS:
            continue
        if not isinstance(values, dict):
            kept[section] = values
            continue
        values = {key: value for key, value in values.items() if key not in MACHINE.get(section, ())}
        if section == "JupyterHub":
            if isinstance(values.get("services"), list):
                values["services"] = [
                    {**service, "environment": _unmarked(service.get("environment", {}))}
                    if isinstance(service, dict) else service
                    for service in values["services"]
                    if not (isinstance(service, dict) and service.get("name") in CONSOLE_SERVICES)]
            if isinstance(values.get("load_roles"), list):
                values["load_roles"] = [role for role in values["load_roles"]
                                        if not (isinstance(role, dict) and role.get("name") in CONSOLE_ROLES)]
        if section == "Spawner" and "environment" in values:
            values["environment"] = _unmarked(values["environment"])
        kept[section] = values
    return _pruned(kept)


def digest(document):
    """SHA-256 (hex) of ``document`` as canonical JSON (keys sorted, no spaces).  Pure."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def settings_digest(settings):
    """The digest of a local hub's configuration: :func:`digest` of :func:`canonical` ``settings``.  Pure."""
    return digest(canonical(settings))
