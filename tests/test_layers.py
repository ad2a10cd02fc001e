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


# The one module of tenants/ allowed on the network: the admin-triggered OIDC discovery fetch.
NETWORK_EXCEPTIONS = {"tenants/discovery.py": {"httpx"}}


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


def test_only_one_writer_of_hub_state():
    writers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "console").rglob("*.py")
               if ".state = " in p.read_text() and "hub.state = " in p.read_text()]
    assert writers == ["console/services/hubs.py"]
