"""The cloud cluster modules (GKE, EKS, AKS) against the wizard, without provider plugins.

``terraform init``/``validate`` need the providers, which cannot be downloaded everywhere the suite runs; so these
tests check what can be checked offline: ``terraform fmt``, and, through python-hcl2, that each module's variables
are exactly its wizard fields (types, defaults, ranges, patterns), that it has the outputs the Kubernetes backend
reads, that its providers are pinned, that no credential ever becomes a variable, and that the cluster has the
hardening hubs rely on (NetworkPolicy enforcement, the metadata server for workloads, Secrets encryption and
control-plane logs, no local admin account, API server authorized ranges from ``api_authorized_ranges``).
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from infra.providers import CLOUD_OUTPUTS, MAX_CIDRS, PROVIDERS, WizardField

try:  # python-hcl2 >= 8 keeps quotes and marks blocks unless told otherwise; 7.x returns plain values already
    from hcl2.utils import SerializationOptions
except ImportError:  # pragma: no cover - python-hcl2 7.x
    SerializationOptions = None

MODULES = Path(__file__).resolve().parents[2] / "infra" / "modules"
CLOUD_MODULES = ("gke-cluster", "eks-cluster", "aks-cluster")
PROVIDER_SOURCES = {"gke-cluster": "hashicorp/google", "eks-cluster": "hashicorp/aws",
                    "aks-cluster": "hashicorp/azurerm"}
MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md")
HCL_TYPES = {"text": "string", "choice": "string", "int": "number", "bool": "bool", "cidrs": "list(string)"}
CREDENTIAL_WORDS = re.compile(r"secret|password|key|token|credential", re.IGNORECASE)
HOME_STORAGE_KEYS = {"type", "server", "path", "capacity_gb"}

pytestmark = pytest.mark.parametrize("module", CLOUD_MODULES)


def _parse(text: str) -> dict[str, Any]:
    if SerializationOptions is None:
        return hcl2.loads(text)
    return hcl2.loads(text, serialization_options=SerializationOptions(
        strip_string_quotes=True, with_comments=False, explicit_blocks=False))


def _expression(value: Any) -> str:
    """The source of an expression as python-hcl2 gives it (``${...}`` around anything but a literal)."""
    text = str(value).strip()
    return text[2:-1].strip() if text.startswith("${") and text.endswith("}") else text


def _labelled(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``[{"name": body}, ...]`` (python-hcl2's shape for labelled blocks) as ``{name: body}``."""
    return {name: body for block in blocks for name, body in block.items() if not name.startswith("__")}


@functools.lru_cache(maxsize=None)
def _module(module: str) -> dict[str, Any]:
    """Every top-level block of the module's .tf files, merged: variable/output by name, terraform as a list."""
    merged: dict[str, Any] = {"variable": {}, "output": {}, "terraform": []}
    for path in sorted((MODULES / module).glob("*.tf")):
        parsed = _parse(path.read_text())
        merged["variable"].update(_labelled(parsed.get("variable", [])))
        merged["output"].update(_labelled(parsed.get("output", [])))
        merged["terraform"].extend(parsed.get("terraform", []))
    return merged


@functools.lru_cache(maxsize=None)
def _resources(module: str) -> dict[str, dict[str, Any]]:
    """Every resource of the module's main.tf as ``{"type.name": body}``."""
    parsed = _parse((MODULES / module / "main.tf").read_text())
    return {f"{kind}.{name}": body for block in parsed.get("resource", []) for kind, named in block.items()
            for name, body in named.items() if not name.startswith("__")}


@functools.lru_cache(maxsize=None)
def _locals(module: str) -> dict[str, Any]:
    parsed = _parse((MODULES / module / "main.tf").read_text())
    return {name: value for block in parsed.get("locals", []) for name, value in block.items()}


def _block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The one nested block ``name`` of a resource body (python-hcl2 gives blocks as lists)."""
    blocks = body.get(name, [])
    assert len(blocks) == 1, f"expected one {name} block, found {len(blocks)}"
    return blocks[0]


def _dynamic(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``dynamic "name"`` block of a resource body: its for_each and content."""
    found = [spec[name] for spec in body.get("dynamic", []) if name in spec]
    assert len(found) == 1, f"expected one dynamic {name} block, found {len(found)}"
    return found[0]


def _wizard_fields(module: str) -> dict[str, WizardField]:
    [provider] = [p for p in PROVIDERS.values() if p.module == module]
    return {f.name: f for f in provider.fields}


def _conditions(variable: dict[str, Any]) -> str:
    return " ".join(_expression(v.get("condition", "")) for v in variable.get("validation", []))


def test_module_has_the_standard_files(module):
    present = {p.name for p in (MODULES / module).iterdir()}
    assert set(MODULE_FILES) <= present, f"{module} lacks {sorted(set(MODULE_FILES) - present)}"


def test_terraform_fmt_is_clean(module, tmp_path):
    terraform = shutil.which("terraform")
    assert terraform, "the terraform CLI is not on PATH"
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text("")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), "CHECKPOINT_DISABLE": "1"}
    result = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(MODULES / module)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"terraform fmt wants changes:\n{result.stdout}{result.stderr}"


def test_every_tf_file_parses(module):
    for path in sorted((MODULES / module).glob("*.tf")):
        assert isinstance(_parse(path.read_text()), dict), path


def test_module_belongs_to_exactly_one_wizard_provider(module):
    assert len([p for p in PROVIDERS.values() if p.module == module]) == 1, f"one wizard provider must use {module}"
    cloud = {p.module for p in PROVIDERS.values() if p.name != "local"}
    assert cloud == set(CLOUD_MODULES), "every cloud provider of the wizard needs its module tested here"


def test_variables_are_exactly_the_wizard_fields(module):
    variables = _module(module)["variable"]
    assert set(variables) == set(_wizard_fields(module))


def test_every_variable_has_a_description_and_the_wizard_type(module):
    fields = _wizard_fields(module)
    for name, variable in _module(module)["variable"].items():
        assert str(variable.get("description", "")).strip(), f"{name} has no description"
        assert "type" in variable, f"{name} has no type"
        assert _expression(variable["type"]) == HCL_TYPES[fields[name].kind], f"{name} has the wrong type"


def test_defaults_are_the_wizard_defaults(module):
    fields = _wizard_fields(module)
    for name, variable in _module(module)["variable"].items():
        if fields[name].default is None:
            assert "default" not in variable, f"{name} is required in the wizard, so it takes no default"
        else:
            assert "default" in variable, f"{name} needs the wizard's default {fields[name].default!r}"
            assert variable["default"] == fields[name].default, f"{name}: default differs from the wizard"
            assert type(variable["default"]) is type(fields[name].default), f"{name}: default has another type"


def test_integer_ranges_are_validated(module):
    variables = _module(module)["variable"]
    for field in _wizard_fields(module).values():
        if field.minimum is None and field.maximum is None:
            continue
        condition = _conditions(variables[field.name])
        assert condition, f"{field.name} has a range in the wizard but no validation"
        if field.minimum is not None:
            assert re.search(rf"var\.{field.name}\s*>=\s*{field.minimum}(?![\d.])", condition), \
                f"{field.name}: validation lacks the minimum {field.minimum}: {condition}"
        if field.maximum is not None:
            assert re.search(rf"var\.{field.name}\s*<=\s*{field.maximum}(?![\d.])", condition), \
                f"{field.name}: validation lacks the maximum {field.maximum}: {condition}"
        assert f"floor(var.{field.name})" in condition, f"{field.name}: validation must require a whole number"


def test_patterns_are_validated(module):
    variables = _module(module)["variable"]
    for field in _wizard_fields(module).values():
        if field.pattern:
            # the wizard matches the whole value (re.fullmatch); Terraform's regex() needs the anchors written out
            anchored = f"^{field.pattern.removeprefix('^').removesuffix('$')}$"
            assert anchored in _conditions(variables[field.name]), f"{field.name}: validation lacks {anchored}"


def test_every_validation_explains_itself(module):
    for name, variable in _module(module)["variable"].items():
        for validation in variable.get("validation", []):
            message = str(validation.get("error_message", "")).strip()
            assert message.endswith(".") and len(message) > 20, f"{name}: unclear error_message {message!r}"


def test_no_credential_becomes_a_variable(module):
    assert not [name for name in _module(module)["variable"] if CREDENTIAL_WORDS.search(name)]


def test_outputs_give_what_the_kubernetes_backend_reads(module):
    outputs = _module(module)["output"]
    assert CLOUD_OUTPUTS | {"region"} <= set(outputs)
    for name, output in outputs.items():
        assert str(output.get("description", "")).strip(), f"output {name} has no description"
    assert outputs["kubeconfig"].get("sensitive") is True
    home_storage = outputs["home_storage"]["value"]
    assert isinstance(home_storage, dict) and set(home_storage) == HOME_STORAGE_KEYS
    assert home_storage["type"] == "nfs"


def test_providers_and_terraform_are_pinned(module):
    terraform_blocks = _module(module)["terraform"]
    versions = [block["required_version"] for block in terraform_blocks if "required_version" in block]
    assert versions == [">= 1.5"]
    providers = {name: spec for block in terraform_blocks for required in block.get("required_providers", [])
                 for name, spec in required.items() if not name.startswith("__")}
    assert {spec.get("source") for spec in providers.values()} == {PROVIDER_SOURCES[module]}
    for name, spec in providers.items():
        constraint = str(spec.get("version", ""))
        assert constraint.startswith("~>") or "<" in constraint, f"provider {name} is not pinned: {constraint!r}"


# -- hardening hubs rely on ------------------------------------------------------------------------------------------

def _gke_network_policy() -> None:
    cluster = _resources("gke-cluster")["google_container_cluster.this"]
    assert cluster["datapath_provider"] == "ADVANCED_DATAPATH", "Dataplane V2 enforces NetworkPolicies on GKE"
    assert _block(cluster, "network_policy")["enabled"] is False, "Calico must stay off alongside Dataplane V2"


def _eks_network_policy() -> None:
    addon = _resources("eks-cluster")["aws_eks_addon.vpc_cni"]
    assert addon["addon_name"] == "vpc-cni"
    assert re.search(r'enableNetworkPolicy\s*=\s*"true"', str(addon["configuration_values"])), \
        "the VPC CNI enforces NetworkPolicies only with enableNetworkPolicy"


def _aks_network_policy() -> None:
    profile = _block(_resources("aks-cluster")["azurerm_kubernetes_cluster.this"], "network_profile")
    assert profile["network_policy"] in ("azure", "cilium")
    if profile["network_policy"] == "cilium":
        assert profile["network_data_plane"] == "cilium", "Cilium network policy needs the Cilium data plane"
    assert profile["network_plugin"] == "azure"


def _gke_api_ranges() -> None:
    assert _expression(_locals("gke-cluster")["api_open"]) == 'contains(var.api_authorized_ranges, "0.0.0.0/0")'
    networks = _dynamic(_resources("gke-cluster")["google_container_cluster.this"],
                        "master_authorized_networks_config")
    assert _expression(networks["for_each"]) == "local.api_open ? [] : [var.api_authorized_ranges]"
    cidrs = _dynamic(networks["content"][0], "cidr_blocks")
    assert _expression(cidrs["for_each"]) == "master_authorized_networks_config.value"
    assert _expression(cidrs["content"][0]["cidr_block"]) == "cidr_blocks.value"


def _eks_api_ranges() -> None:
    vpc = _block(_resources("eks-cluster")["aws_eks_cluster.this"], "vpc_config")
    assert _expression(vpc["public_access_cidrs"]) == "var.api_authorized_ranges"


def _aks_api_ranges() -> None:
    assert _expression(_locals("aks-cluster")["api_authorized_ranges"]) == \
        'contains(var.api_authorized_ranges, "0.0.0.0/0") ? [] : var.api_authorized_ranges'
    profile = _block(_resources("aks-cluster")["azurerm_kubernetes_cluster.this"], "api_server_access_profile")
    assert _expression(profile["authorized_ip_ranges"]) == "local.api_authorized_ranges"


def _gke_control_plane() -> None:
    resources = _resources("gke-cluster")
    cluster, pools = resources["google_container_cluster.this"], resources["google_container_node_pool.this"]
    assert _block(cluster, "workload_identity_config")["workload_pool"] == "${var.project_id}.svc.id.goog"
    for body in (cluster, pools):  # the short-lived default pool and every pool of ours
        node_config = _block(body, "node_config")
        assert _block(node_config, "workload_metadata_config")["mode"] == "GKE_METADATA"
        assert node_config["metadata"]["disable-legacy-endpoints"] == "true"
    certificates = _block(_block(cluster, "master_auth"), "client_certificate_config")
    assert certificates["issue_client_certificate"] is False


def _eks_control_plane() -> None:
    resources = _resources("eks-cluster")
    cluster = resources["aws_eks_cluster.this"]
    encryption = _block(cluster, "encryption_config")
    assert encryption["resources"] == ["secrets"]
    assert _expression(_block(encryption, "provider")["key_arn"]) == "aws_kms_key.cluster.arn"
    assert resources["aws_kms_key.cluster"]["enable_key_rotation"] is True
    assert set(cluster["enabled_cluster_log_types"]) == {"api", "audit", "authenticator", "controllerManager",
                                                        "scheduler"}
    logs = resources["aws_cloudwatch_log_group.cluster"]
    assert _expression(logs["name"]) == "local.log_group"
    assert _locals("eks-cluster")["log_group"] == "/aws/eks/${var.name}/cluster", "EKS writes to this group only"
    assert logs["retention_in_days"] >= 365


def _aks_control_plane() -> None:
    resources = _resources("aks-cluster")
    cluster = resources["azurerm_kubernetes_cluster.this"]
    assert cluster["local_account_disabled"] is True
    assert _block(cluster, "azure_active_directory_role_based_access_control")["azure_rbac_enabled"] is True
    admin = resources["azurerm_role_assignment.cluster_admin"]
    assert admin["role_definition_name"] == "Azure Kubernetes Service RBAC Cluster Admin"
    assert _expression(admin["scope"]) == "azurerm_kubernetes_cluster.this.id"
    # With local accounts off, AKS's own kubeconfig signs in interactively: the output must be the module's own.
    kubeconfig = _module("aks-cluster")["output"]["kubeconfig"]["value"]
    assert _expression(kubeconfig) == "local.kubeconfig"
    source = (MODULES / "aks-cluster" / "main.tf").read_text() + (MODULES / "aks-cluster" / "outputs.tf").read_text()
    assert "kube_config_raw" not in source and "kube_admin_config" not in source


HARDENING = {
    "network_policy": {"gke-cluster": _gke_network_policy, "eks-cluster": _eks_network_policy,
                       "aks-cluster": _aks_network_policy},
    "api_ranges": {"gke-cluster": _gke_api_ranges, "eks-cluster": _eks_api_ranges, "aks-cluster": _aks_api_ranges},
    "control_plane": {"gke-cluster": _gke_control_plane, "eks-cluster": _eks_control_plane,
                      "aks-cluster": _aks_control_plane},
}


def test_network_policies_are_enforced(module):
    """The chart's and the console's NetworkPolicies do nothing unless the cluster's network enforces them."""
    HARDENING["network_policy"][module]()


def test_api_server_ranges_come_from_the_variable(module):
    HARDENING["api_ranges"][module]()


def test_control_plane_is_hardened(module):
    HARDENING["control_plane"][module]()


def test_api_authorized_ranges_variable_is_validated(module):
    variable = _module(module)["variable"]["api_authorized_ranges"]
    assert variable["default"] == ["0.0.0.0/0"]
    condition = _conditions(variable)
    assert f"length(var.api_authorized_ranges) <= {MAX_CIDRS}" in condition, "the wizard's limit must be the module's"
    assert "length(var.api_authorized_ranges) >= 1" in condition
    assert "cidrsubnet(cidr, 0, 0) == cidr" in condition, "ranges with host bits set must be refused"


RANGE_SAMPLES = ("0.0.0.0/0", "203.0.113.0/24, 198.51.100.7/32", "10.0.0.1/8", "2001:db8::/32", "300.0.0.0/8",
                 ", ".join(f"10.0.{i}.0/24" for i in range(MAX_CIDRS + 1)))


def test_wizard_and_module_agree_on_api_authorized_ranges(module, tmp_path):
    """Terraform itself judges each sample against the module's validation (the variable block alone, so no
    provider is needed); the wizard must accept exactly what the module accepts, as the same list."""
    terraform = shutil.which("terraform")
    assert terraform, "the terraform CLI is not on PATH"
    source = (MODULES / module / "variables.tf").read_text()
    start = source.index('variable "api_authorized_ranges"')
    (tmp_path / "main.tf").write_text(source[start:source.index("\n}\n", start) + 3])
    (tmp_path / "terraformrc").write_text("")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(tmp_path / "terraformrc"), "CHECKPOINT_DISABLE": "1"}
    field = _wizard_fields(module)["api_authorized_ranges"]
    for sample in RANGE_SAMPLES:
        try:
            wizard = field.parse(sample)
        except ValueError:
            wizard = None
        listed = "[" + ", ".join(f'"{item.strip()}"' for item in sample.split(",")) + "]"
        result = subprocess.run([terraform, "console", "-var", f"api_authorized_ranges={listed}"],
                                input="jsonencode(var.api_authorized_ranges)\n", capture_output=True, text=True,
                                cwd=tmp_path, env=env, timeout=120, check=False)
        # terraform console reports an invalid variable on stderr, with no value and (still) exit status 0
        refused = result.returncode != 0 or "Invalid value for variable" in result.stderr
        module_value = None if refused else json.loads(json.loads(result.stdout.strip()))
        assert wizard == module_value, f"{sample!r}: wizard gives {wizard}, the module {module_value}:\n{result.stderr}"
