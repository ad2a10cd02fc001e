"""checkov, a Terraform security scanner, over infra/modules: no failed check, every finding left is skipped in the
module with its reason, no skip that nothing needs, and the hardening hubs rely on is among the passing checks.

checkov runs for real (the version scripts/ensure-checkov.sh pins, in its own virtual environment because its
dependencies clash with the project's), offline (``--skip-download``), on the modules as they are and on a copy with
every ``#checkov:skip`` comment removed, which shows what each skip hides.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "infra" / "modules"
CHECKOV = ROOT / ".venv" / "checkov" / "bin" / "checkov"
MISSING = (f"checkov is missing at {CHECKOV.relative_to(ROOT)}: run `make setup-test`, whose "
           "scripts/ensure-checkov.sh installs the pinned checkov into a virtual environment of its own")
SKIP_COMMENT = re.compile(r"^\s*#\s*checkov:skip=(?P<check>CKV2?_\w+):(?P<reason>.*)$", re.MULTILINE)
SCAN_TIMEOUT = 300

# What hubs rely on, by module: (check id, resource) pairs that must pass, never be skipped.
HARDENING = {
    "gke-cluster": {
        ("CKV_GCP_12", "google_container_cluster.this"),  # NetworkPolicy enforced (Dataplane V2)
        ("CKV_GCP_69", "google_container_cluster.this"),  # GKE metadata server for workloads
        ("CKV_GCP_69", "google_container_node_pool.this"),
        ("CKV_GCP_13", "google_container_cluster.this"),  # no client certificates
        ("CKV_GCP_20", "google_container_cluster.this"),  # API server authorized networks
    },
    "eks-cluster": {
        ("CKV_AWS_58", "aws_eks_cluster.this"),  # Secrets encrypted with a KMS key
        ("CKV_AWS_37", "aws_eks_cluster.this"),  # every control-plane log type
        ("CKV_AWS_7", "aws_kms_key.cluster"),  # the key rotates
        ("CKV_AWS_158", "aws_cloudwatch_log_group.cluster"),  # the logs are encrypted with it
    },
    "aks-cluster": {
        ("CKV_AZURE_141", "azurerm_kubernetes_cluster.this"),  # no local admin account
        ("CKV_AZURE_6", "azurerm_kubernetes_cluster.this"),  # API server authorized IP ranges
    },
}


def _scan(directory: Path) -> subprocess.Popen:
    return subprocess.Popen([str(CHECKOV), "-d", str(directory), "--framework", "terraform", "-o", "json",
                             "--skip-download"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _report(process: subprocess.Popen) -> dict[str, list[dict[str, Any]]]:
    """checkov's results (passed, failed, skipped checks) from a finished scan; exit 1 only means failed checks."""
    out, err = process.communicate(timeout=SCAN_TIMEOUT)
    assert process.returncode in (0, 1), f"checkov crashed (exit {process.returncode}):\n{err[-3000:]}"
    parsed = json.loads(out)
    reports = parsed if isinstance(parsed, list) else [parsed]
    [report] = [r for r in reports if r.get("check_type") == "terraform"]
    return report["results"]


def _without_skips(source: Path, target: Path) -> Path:
    """A copy of the modules with every skip comment removed (and no provider caches or state)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl"))
    for path in target.rglob("*.tf"):
        path.write_text(SKIP_COMMENT.sub("", path.read_text()))
    return target


def _keyed(checks: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(module, check id, resource) for each result; file paths are relative to the scanned directory."""
    return {(Path(c["file_path"]).parts[1], c["check_id"], c["resource"]) for c in checks}


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Both scans, run side by side: "modules" as they are, "unskipped" without the skip comments."""
    if not CHECKOV.exists():
        pytest.fail(MISSING)
    stripped = _without_skips(MODULES, tmp_path_factory.mktemp("checkov") / "modules")
    running = {"modules": _scan(MODULES), "unskipped": _scan(stripped)}
    return {name: _report(process) for name, process in running.items()}


def test_no_check_fails(scans):
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}"
              for c in scans["modules"]["failed_checks"]]
    assert not failed, "fix these, or skip them in the module with their reason:\n" + "\n".join(failed)


def test_the_scan_covers_every_cloud_module(scans):
    scanned = {module for module, _, _ in _keyed(scans["modules"]["passed_checks"])}
    assert {"gke-cluster", "eks-cluster", "aks-cluster"} <= scanned


def test_every_skip_gives_its_reason(scans):
    skipped = scans["modules"]["skipped_checks"]
    assert skipped, "the modules skip findings with reasons; a scan that sees no skip comment is not reading them"
    for check in skipped:
        reason = str(check["check_result"].get("suppress_comment", "")).strip()
        assert len(reason) >= 40 and reason.endswith("."), \
            f"{check['check_id']} on {check['resource']} is skipped without a real reason: {reason!r}"


def test_every_skip_hides_a_finding(scans):
    """A skip comment whose check would pass anyway, or that names no check on its resource, must go."""
    skipped, would_fail = _keyed(scans["modules"]["skipped_checks"]), _keyed(scans["unskipped"]["failed_checks"])
    assert skipped == would_fail, (f"skipped but passing without the skip: {sorted(skipped - would_fail)}; "
                                   f"failing and not skipped: {sorted(would_fail - skipped)}")


def test_every_skip_comment_is_read_by_checkov(scans):
    written = {(path.parent.name, match["check"]) for path in MODULES.rglob("*.tf")
               for match in SKIP_COMMENT.finditer(path.read_text())}
    applied = {(module, check) for module, check, _ in _keyed(scans["modules"]["skipped_checks"])}
    assert written == applied, f"skip comments checkov did not apply: {sorted(written - applied)}"


@pytest.mark.parametrize("module", sorted(HARDENING))
def test_the_hardening_hubs_rely_on_passes(scans, module):
    passed = _keyed(scans["modules"]["passed_checks"])
    skipped = _keyed(scans["modules"]["skipped_checks"])
    for check, resource in sorted(HARDENING[module]):
        assert (module, check, resource) not in skipped, f"{module}: {check} on {resource} must not be skipped"
        assert (module, check, resource) in passed, f"{module}: {check} on {resource} does not pass"
