"""DESIGN section 2: imports go one way. tenants/, clusters/, infra/ never import Flask or console/."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "tenants": ("flask", "console", "flask_sqlalchemy", "sqlalchemy", "httpx", "clusters", "infra"),
    "clusters": ("flask", "console", "flask_sqlalchemy", "sqlalchemy"),
    "infra": ("flask", "console", "flask_sqlalchemy", "sqlalchemy"),
}


# The one module of tenants/ allowed on the network: the guarded client for URLs a person typed.
NETWORK_EXCEPTIONS = {"tenants/outbound.py": {"httpx"}}


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_upper_ones(package):
    offenders = []
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    for path in files:
        allowed = NETWORK_EXCEPTIONS.get(path.relative_to(ROOT).as_posix(), set())
        for module in imported_modules(path):
            if module.split(".")[0] in FORBIDDEN[package] and module.split(".")[0] not in allowed:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


OBSERVED = {"health", "health_since", "status_message", "observed_at", "jupyterhub_version", "user_count",
            "running_servers", "active_users", "probe_seconds"}


def _attribute_writes(path: Path):
    """(attribute, the expression it is set on) for every assignment to an attribute in ``path``."""
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            for part in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if isinstance(part, ast.Attribute):
                    yield part.attr, ast.unparse(part.value)


def test_only_one_writer_of_hub_state_and_of_what_is_observed():
    """``Hub.state`` is written by ``transition()`` only and the observed columns by ``observe_hub()`` only, both in
    console/services/hubs.py; anything else goes through them."""
    state_writers, observed_writers = set(), set()
    for path in (ROOT / "console").rglob("*.py"):
        for attribute, owner in _attribute_writes(path):
            if attribute == "state" and "hub" in owner.lower():
                state_writers.add(path.relative_to(ROOT).as_posix())
            if attribute in OBSERVED:
                observed_writers.add(path.relative_to(ROOT).as_posix())
    assert state_writers == {"console/services/hubs.py"}
    assert observed_writers == {"console/services/hubs.py"}
