"""The backend interface: what the reconciler asks of anything that can run a hub.

A backend is told *what* a hub should look like (a :class:`HubSpec`) and hands back an opaque, JSON-serialisable
``state`` dict that the console stores on the hub row and passes back on every later call, the way JupyterHub stores a
``Spawner.state``.  Because everything the backend needs to find its hub again lives in that dict (or can be found from
the slug), changing code or templates never orphans a running hub.

Contract for every method:

The returned state is stored in the console's database in the clear: it must never hold a secret from the spec.

``render_target``
    What ``HubSpec.config`` is for this backend: "local" (JupyterHub traitlets sections) or "z2jh" (the Zero to
    JupyterHub chart's values).  ``HubSpec.secrets`` has the same shape and holds only the secret leaves; a backend
    keeps them apart from the config wherever it can (Kubernetes: a Secret the HelmRelease reads), and never in state.

``deploy(spec, state) -> state``
    Make the hub exist and run with ``spec``; start it if it is not running, restart it if its rendered config
    changed, do nothing if it already matches.  Returns without waiting for readiness (the reconciler polls
    :meth:`status`).  Safe to call twice: a second call with the same spec is a no-op.  Raises :class:`BackendError`
    with a message fit for an operation log.

``restart(spec, state) -> state``
    Stop and start the hub; safe to call twice.

``backup(state, name) -> str`` / ``restore(state, backup)``
    Copy the hub's database aside (while it runs) and put a copy back (the hub is stopped first; the next
    ``deploy`` starts it).  Used around upgrades, since a newer JupyterHub migrates its database.

``stop(state)``
    Stop the hub but keep everything it needs to start again (its database, users' files); a later ``deploy``
    starts it.  Safe to call twice.

``remove(state)``
    Stop the hub and delete everything the backend made for it.  Safe to call twice and on a hub that never started.

``status(state) -> HubStatus`` / ``statuses(states) -> list[HubStatus]``
    What the backend sees now: ``phase`` (one of :data:`PHASES`) and ``reason`` say where a change stands and why.
    ``statuses`` answers for many hubs of one cluster at once (one look per kind of object, not one per hub);
    :func:`statuses` falls back to ``status`` per hub for backends without it.  Never raises for an unreachable or missing hub: that is a status, not an error.
    Returns within a few seconds (it may ask the hub over HTTP); ``retry_after`` hints when a hub that is not ready
    yet is worth asking again.

``alive(state) -> bool | None``
    Cheap (no network; a process table or a cached watch): whether the hub's processes exist.  ``None`` when the
    backend cannot tell cheaply.  Called every couple of seconds for every hub of a ``supervised`` backend.

``supervised``
    True when nothing but the console restarts a hub whose processes died (local processes); False where the
    platform does it (Kubernetes restarts pods itself).

``log_tail(state, lines) -> HubLog``
    The end of the hub's own log (what JupyterHub wrote), at most ``lines`` lines, oldest first.  Never raises: with
    nothing to read (never deployed, no pod yet, the platform does not answer) ``HubLog.lines`` is empty and
    ``reason`` says why.  Reads a bounded amount (the log's last :data:`LOG_TAIL_BYTES`), never asks the hub itself.
    Values only the backend knows (the tokens it gave the hub) are blanked; the caller blanks the spec's secrets.

``config_digest(spec) -> str | None`` (a static method, optional)
    The digest of the configuration ``deploy(spec)`` gives the hub, computed the way :meth:`status` reports the one
    the hub runs (``HubStatus.config_digest``); pure.  A backend without it reports no drift (:func:`wanted_digest`).
    A backend may add ``running_digest(state) -> str | None``: the digest the hub runs, cheaply (no network, like
    :meth:`alive`), for hubs the monitor probes over HTTP instead of asking :meth:`status`.

``api_url(state)`` / ``api_token(state, purpose)``
    Where and how to reach the hub's REST API (``/hub/api/``); ``None`` when unknown.  ``purpose`` "probe" gives a
    read-only token; "check" one that may create a test user and start and stop its server.

``archive(state, target, log) -> ArchiveResult``
    Copy the hub's JupyterHub database (a consistent copy, taken while the hub runs) and every hub user's home into
    one compressed archive named ``target`` (a file name without directory; each backend knows where its archives
    go), with a ``manifest.json`` inside; return where it is, its size and sha256 and that manifest.  Blocks until
    the archive is complete; touches nothing of the hub (it keeps serving).  Safe to call twice: a second call
    writes the archive afresh.  Raises :class:`BackendError` when the archive cannot be made complete; nothing
    partial is left behind then.

``restore_archive(spec, state, archive, log)``
    Put an archive made by :meth:`archive` (``archive`` is its ``ArchiveResult.location``) into the hub of ``spec``
    before that hub first starts: its database, so its users exist, and each user's home, owned by whoever the
    hub will run that user's server as.  ``state`` is the new hub's (empty before its first deploy); ``sha256``
    (keyword), when given, is checked against the file first.  Refuses (:class:`BackendError`) an archive whose
    checksums do not match, or a hub that already runs.  Safe to call twice before that first start.  Optional: a
    backend that cannot restore (Kubernetes, whose archives live on the cluster's NFS location) lacks the method,
    and the console offers no restore onto its clusters.

``purge_archive(location, log)``
    Delete an archive for good; one already gone is fine.  Returns within seconds (the console's retention pass
    calls it): where the platform deletes it (a Kubernetes Job), the deletion is started, not awaited.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


# Where a hub's last change stands: waiting to be picked up, under way, done, failing and retried, undone by the
# platform (the previous version runs again), given up.
PHASES = ("pending", "progressing", "succeeded", "retrying", "rolled-back", "failed")


@dataclass(frozen=True)
class Check:
    """One onboarding check of a cluster: what was checked, whether it passed, what was seen, how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class BackendError(RuntimeError):
    """A backend could not do what it was asked; the message is shown in the operation log."""


@dataclass(frozen=True)
class HubSpec:
    """Everything a backend needs to run one hub; plain data, never an ORM row."""

    slug: str
    institution: str
    release: str = "default"
    jupyterhub_version: str | None = None  # None: whatever the backend runs by default
    # The rendered config for the backend's render_target (local: traitlets sections {"JupyterHub": {...}}; z2jh:
    # chart values), without secrets; ``secrets`` has the same shape and only the secret leaves.
    config: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict)
    uid: str = ""  # unique in the fleet for the hub's whole life (a deleted hub's slug may be used again)
    chart_version: str = ""  # Kubernetes: the z2jh chart version and hub image of the release
    hub_image: str = ""
    policy: dict[str, Any] = field(default_factory=dict)  # the institution's guardrails (tenants.policy)

    def full_config(self) -> dict[str, Any]:
        """The config with its secrets merged back in (for a backend that writes both to one private file)."""
        return merge_secrets(self.config, self.secrets)


@dataclass(frozen=True)
class HubStatus:
    running: bool  # the hub's process or workload exists
    ready: bool  # it answered /hub/health
    url: str | None = None
    version: str | None = None
    users: int | None = None
    message: str = ""
    retry_after: float | None = None  # seconds after which asking again is worthwhile; None: the caller's default
    phase: str = ""  # one of PHASES; "" when the backend cannot tell
    reason: str = ""  # a short machine word for why (UpgradeFailed, ImagePullBackOff, ...)
    # The digest of the configuration the hub runs (clusters/config_digest.py), as the hub or its platform reports
    # it; None when unknown (a hub that is down, or started before hubs reported one).
    config_digest: str | None = None


# How much of a hub's log ``log_tail`` reads at most: a hub that ran for months has a long one.
LOG_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class HubLog:
    """The end of a hub's log: ``lines`` oldest first; ``reason`` why there are none, or which run of the hub they
    come from when it is not the current one; ``source`` where they were read (a file's path, a pod's name), for
    operators."""

    lines: list[str] = field(default_factory=list)
    reason: str = ""
    source: str = ""


@dataclass(frozen=True)
class ArchiveResult:
    """One archive a backend made of a hub: ``location`` (a file path for local hubs, ``nfs://server/path/file``
    for Kubernetes), ``size`` in bytes, the ``sha256`` of the file, and the ``manifest`` it holds:
    ``{"database": {"name", "bytes", "sha256"}, "users": [{"name", "bytes", "files"}], ...}`` (users by their
    JupyterHub name)."""

    location: str
    size: int
    sha256: str
    manifest: dict[str, Any] = field(default_factory=dict)


def merge_secrets(config: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``secrets`` (same shape, secret leaves only) merged in; pure."""
    merged = dict(config)
    for key, value in secrets.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_secrets(merged[key], value)
        else:
            merged[key] = value
    return merged


def statuses(backend: "Backend", states: list[dict]) -> list[HubStatus]:
    """The status of every hub in ``states`` (all on one backend), in one look where the backend can."""
    many = getattr(backend, "statuses", None)
    return many(states) if many else [backend.status(state) for state in states]


Log = Callable[[str], None]


class Backend(Protocol):
    name: str
    supervised: bool
    render_target: str

    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict: ...

    def restart(self, spec: HubSpec, state: dict, log: Log) -> dict: ...

    def stop(self, state: dict, log: Log) -> None: ...

    def backup(self, state: dict, name: str, log: Log) -> str: ...

    def restore(self, state: dict, backup: str, log: Log) -> None: ...

    def remove(self, state: dict, log: Log) -> None: ...

    def status(self, state: dict) -> HubStatus: ...

    def alive(self, state: dict) -> bool | None: ...

    def log_tail(self, state: dict, lines: int = 200) -> HubLog: ...

    def api_url(self, state: dict) -> str | None: ...

    def api_token(self, state: dict, purpose: str = "probe") -> str | None: ...

    def archive(self, state: dict, target: str, log: Log) -> ArchiveResult: ...

    def restore_archive(self, spec: HubSpec, state: dict, archive: str, log: Log,
                        sha256: str | None = None) -> None: ...

    def purge_archive(self, location: str, log: Log) -> None: ...


_REGISTRY: dict[str, Callable[..., Backend]] = {}


def register(name: str):
    """Class decorator: make a backend available to :func:`get_backend` under ``name``."""

    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def get_backend(name: str, **settings: Any) -> Backend:
    """Build the backend registered as ``name`` with ``settings``; raises ``KeyError`` for an unknown name."""
    return backend_class(name)(**settings)


def backend_class(name: str):
    """The class registered as ``name`` (its ``render_target`` and ``supervised`` need no instance)."""
    load_builtin()
    return _REGISTRY[name]


def wanted_digest(backend: str, spec: HubSpec) -> str | None:
    """The digest of the configuration ``deploy(spec)`` gives a hub of the backend registered as ``backend``,
    computed as that backend's hubs report theirs (``HubStatus.config_digest``), so the two compare: equal when the
    hub runs what the console would deploy now.  None when the backend reports no digest.  Pure."""
    digest_of = getattr(backend_class(backend), "config_digest", None)
    return digest_of(spec) if digest_of is not None else None


def load_builtin() -> None:
    """Import (and so register) the built-in backends.  Done at first use, so importing this module stays cheap;
    `hubfleet serve` does it before it forks its web processes, because the Kubernetes client takes seconds to import
    and a request that came first would hold every other thread of its process on the import lock meanwhile."""
    from clusters import kubernetes, local, slurm_backend, testing  # noqa: F401
