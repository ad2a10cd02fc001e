"""The cloud cluster modules (GKE, EKS, AKS) against the wizard, without provider plugins.

``terraform init``/``validate`` need the providers, which cannot be downloaded everywhere the suite runs; so these
tests check what can be checked offline: ``terraform fmt``, and, through python-hcl2, that each module's variables
are exactly its wizard fields (types, defaults, ranges, patterns), that it has the outputs the Kubernetes backend
reads, that its providers are pinned and that no credential ever becomes a variable.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from infra.providers import CLOUD_OUTPUTS, PROVIDERS, WizardField

try:  # python-hcl2 >= 8 keeps quotes and marks blocks unless told otherwise; 7.x returns plain values already
    from hcl2.utils import SerializationOptions
except ImportError:  # pragma: no cover - python-hcl2 7.x
    SerializationOptions = None

MODULES = Path(__file__).resolve().parents[2] / "infra" / "modules"
CLOUD_MODULES = ("gke-cluster", "eks-cluster", "aks-cluster")
PROVIDER_SOURCES = {"gke-cluster": "hashicorp/google", "eks-cluster": "hashicorp/aws",
                    "aks-cluster": "hashicorp/azurerm"}
MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md")
HCL_TYPES = {"text": "string", "choice": "string", "int": "number", "bool": "bool"}
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
