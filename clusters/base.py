"""The backend interface: what the reconciler asks of anything that can run a hub.

A backend is told *what* a hub should look like (a :class:`HubSpec`) and hands back an opaque, JSON-serialisable
``state`` dict that the console stores on the hub row and passes back on every later call, the way JupyterHub stores a
``Spawner.state``.  Because everything the backend needs to find its hub again lives in that dict (or can be found from
the slug), changing code or templates never orphans a running hub.

Contract for every method:

The returned state is stored in the console's database in the clear: it must never hold a secret from the spec.

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

``status(state) -> HubStatus``
    What the backend sees now.  Never raises for an unreachable or missing hub: that is a status, not an error.
    Returns within a few seconds (it may ask the hub over HTTP); ``retry_after`` hints when a hub that is not ready
    yet is worth asking again.

``alive(state) -> bool | None``
    Cheap (no network; a process table or a cached watch): whether the hub's processes exist.  ``None`` when the
    backend cannot tell cheaply.  Called every couple of seconds for every hub of a ``supervised`` backend.

``supervised``
    True when nothing but the console restarts a hub whose processes died (local processes); False where the
    platform does it (Kubernetes restarts pods itself).

``api_url(state)`` / ``api_token(state, purpose)``
    Where and how to reach the hub's REST API (``/hub/api/``); ``None`` when unknown.  ``purpose`` "probe" gives a
    read-only token; "check" one that may create a test user and start and stop its server.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


class BackendError(RuntimeError):
    """A backend could not do what it was asked; the message is shown in the operation log."""


@dataclass(frozen=True)
class HubSpec:
    """Everything a backend needs to run one hub; plain data, never an ORM row."""

    slug: str
    institution: str
    release: str = "default"
    jupyterhub_version: str | None = None  # None: whatever the backend runs by default
    # JupyterHub configuration as traitlets sections: {"JupyterHub": {...}, "Authenticator": {...}}.
    config: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class HubStatus:
    running: bool  # the hub's process or workload exists
    ready: bool  # it answered /hub/health
    url: str | None = None
    version: str | None = None
    users: int | None = None
    message: str = ""
    retry_after: float | None = None  # seconds after which asking again is worthwhile; None: the caller's default


Log = Callable[[str], None]


class Backend(Protocol):
    name: str
    supervised: bool

    def deploy(self, spec: HubSpec, state: dict, log: Log) -> dict: ...

    def restart(self, spec: HubSpec, state: dict, log: Log) -> dict: ...

    def stop(self, state: dict, log: Log) -> None: ...

    def backup(self, state: dict, name: str, log: Log) -> str: ...

    def restore(self, state: dict, backup: str, log: Log) -> None: ...

    def remove(self, state: dict, log: Log) -> None: ...

    def status(self, state: dict) -> HubStatus: ...

    def alive(self, state: dict) -> bool | None: ...

    def api_url(self, state: dict) -> str | None: ...

    def api_token(self, state: dict, purpose: str = "probe") -> str | None: ...


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
    _load_builtin()
    return _REGISTRY[name](**settings)


def _load_builtin() -> None:
    # Importing registers them; done lazily so importing this module stays cheap.
    from clusters import local, testing  # noqa: F401
