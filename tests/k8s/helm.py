"""The z2jh chart rendered by the real Helm engine (Helm SDK v4 through helm-python-sdk), as ``helm template`` does.

The chart source has only ``values.schema.yaml``; a release writes ``values.schema.json`` from it, and only then
does Helm check values against the schema.  The chart is copied once per process to a temporary directory with
that file written, loaded once, and rendered from memory after that.

Two things ``helm template --kube-version`` does that the SDK's render call does not are done here:
- ``.Capabilities.KubeVersion`` is passed through the native call (the Python wrapper does not expose it);
- the chart's ``kubeVersion`` constraint is checked, with Helm's own message (:func:`kube_version_problem`).
"""
from __future__ import annotations

import atexit
import functools
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import helm_python
import yaml
from helm_python import _native

from tests.k8s.reference import chart_dir


class RenderError(Exception):
    """Helm refused the values or a template failed; the message is Helm's."""


@functools.lru_cache(maxsize=1)
def chart() -> helm_python.Chart:
    """The reference chart, with ``values.schema.json`` written, loaded once per process."""
    workdir = Path(tempfile.mkdtemp(prefix="hubfleet-z2jh-"))
    atexit.register(shutil.rmtree, workdir, True)
    target = workdir / "jupyterhub"
    shutil.copytree(chart_dir(), target)
    schema = yaml.safe_load((target / "values.schema.yaml").read_text())
    (target / "values.schema.json").write_text(json.dumps(schema))
    loaded = helm_python.Chart.load(target)
    atexit.register(loaded.close)
    return loaded


def render_manifests(values: dict[str, Any], name: str = "hub", namespace: str = "hub",
                     kube_version: str = "1.33.0") -> dict[str, str]:
    """{template path: rendered text} for a first install, as ``helm template`` renders it."""
    constraint = chart().metadata.get("kubeVersion") or ""
    problem = kube_version_problem(constraint, kube_version)
    if problem:
        raise RenderError(problem)
    options = {"name": name, "namespace": namespace, "kube_version": _v(kube_version), "is_install": True}
    try:
        out = _native.call_string("helm_render", chart()._raw(), json.dumps(values), json.dumps(options))
    except helm_python.HelmError as exc:
        raise RenderError(str(exc)) from None
    return json.loads(out)


def render(values: dict[str, Any], name: str = "hub", namespace: str = "hub", kube_version: str = "1.33.0"
           ) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (hooks included), parsed, sorted by template path.

    Raises :class:`RenderError` with Helm's message for values the schema refuses, a template's ``fail`` or
    ``required``, or a cluster version outside the chart's ``kubeVersion``.
    """
    manifests = render_manifests(values, name, namespace, kube_version)
    return [obj for path, text in sorted(manifests.items()) if path.endswith((".yaml", ".yml"))
            for obj in yaml.safe_load_all(text) if obj]


def schema_check(values: dict[str, Any]) -> None:
    """Raise :class:`RenderError` with Helm's message unless ``values`` pass the chart's values schema."""
    try:
        chart().validate_schema(values)
    except helm_python.HelmError as exc:
        raise RenderError(str(exc)) from None


# --- the chart's kubeVersion constraint (Masterminds semver ranges, the subset charts use) ---------------------

_VERSION = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
_TERM = re.compile(r"^(>=|<=|!=|=>|=<|>|<|=|~|\^)?\s*(v?\d[0-9A-Za-z.+-]*)$")


def _v(version: str) -> str:
    """'v1.33.0' from '1.33.0' or 'v1.33.0': Helm prints and passes kube versions with the 'v'."""
    return version if version.startswith("v") else f"v{version}"


def parse_version(text: str) -> tuple[tuple[int, int, int], tuple[Any, ...]]:
    """((major, minor, patch), prerelease identifiers) of a semantic version; missing parts are 0."""
    match = _VERSION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a semantic version")
    core = tuple(int(part or 0) for part in match.group(1, 2, 3))
    pre = tuple(int(p) if p.isdigit() else p for p in match.group(4).split(".")) if match.group(4) else ()
    return core, pre  # type: ignore[return-value]


def _order(version: tuple[tuple[int, int, int], tuple[Any, ...]]) -> tuple[Any, ...]:
    """A sort key: a prerelease sorts before its release; numeric identifiers before alphanumeric ones."""
    core, pre = version
    return (core, 0 if pre else 1, tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in pre))


def _satisfies(version: tuple, term: str) -> bool:
    match = _TERM.match(term.strip())
    if not match:
        raise ValueError(f"unsupported kubeVersion term {term!r}")
    op, bound = match.group(1) or "=", parse_version(match.group(2))
    have, want = _order(version), _order(bound)
    if op == "~":  # same major.minor, at least the bound
        return version[0][:2] == bound[0][:2] and have >= want
    if op == "^":  # same major, at least the bound
        return version[0][0] == bound[0][0] and have >= want
    return {">=": have >= want, "=>": have >= want, "<=": have <= want, "=<": have <= want, ">": have > want,
            "<": have < want, "=": have == want, "!=": have != want}[op]


def satisfies(constraint: str, version: str) -> bool:
    """Whether ``version`` meets a Helm ``kubeVersion`` range: '||' alternatives of ','- or space-separated terms.

    As in Masterminds semver (Helm's), a prerelease version matches only a range whose terms carry a prerelease
    themselves, which is why charts write '>=1.32.0-0' to admit 'v1.32.3-gke.1200'.
    """
    parsed = parse_version(version)
    for alternative in constraint.split("||"):
        terms = [t for t in re.split(r"[,\s]+", re.sub(r"(>=|<=|!=|=>|=<|>|<|=|~|\^)\s+", r"\1", alternative))
                 if t]
        if parsed[1] and not any(parse_version(_TERM.match(t).group(2))[1] for t in terms if _TERM.match(t)):
            continue
        if terms and all(_satisfies(parsed, term) for term in terms):
            return True
    return False


def kube_version_problem(constraint: str, kube_version: str) -> str | None:
    """Helm's refusal for a cluster version outside the chart's ``kubeVersion``, or None."""
    if not constraint or satisfies(constraint, kube_version):
        return None
    return f"chart requires kubeVersion: {constraint} which is incompatible with Kubernetes {_v(kube_version)}"
