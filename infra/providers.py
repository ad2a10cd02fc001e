"""What the cluster wizard asks for each provider, mirroring the Terraform module's variables and validation.

Pure (no Flask, no I/O).  A test checks that every provider's fields are exactly its module's variables, so the
wizard and the module cannot drift apart.  Credentials never become Terraform variables: they reach the provider
plugin through its own environment variables, so they never sit in a plan, a state file or a command line.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$")
MAX_CIDRS = 20  # the modules' api_authorized_ranges validation allows 1 to 20 ranges
# Between ranges: commas and white space, and the brackets and quotes of a list shown back in the form as text.
_CIDR_SEPARATORS = re.compile(r"[\s,\[\]'\"]+")


class FieldError(ValueError):
    pass


@dataclass(frozen=True)
class WizardField:
    name: str
    label: str
    default: Any = None
    kind: str = "text"  # text | int | bool | choice | cidrs (a list of IPv4 networks)
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    help: str = ""

    def parse(self, raw: Any) -> Any:
        """The clean value for Terraform, or FieldError with a message for the operator (mirrors the module)."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if self.default is None:
                raise FieldError(f"{self.label} is required.")
            return list(self.default) if isinstance(self.default, list) else self.default
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).strip().lower() in ("on", "true", "1", "yes"):
                return True
            if str(raw).strip().lower() in ("off", "false", "0", "no", ""):
                return False
            raise FieldError("Choose yes or no.")
        if self.kind == "int":
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise FieldError("Enter a whole number.") from None
            if self.minimum is not None and value < self.minimum:
                raise FieldError(f"Use {self.minimum} or more.")
            if self.maximum is not None and value > self.maximum:
                raise FieldError(f"Use {self.maximum} or less.")
            return value
        if self.kind == "cidrs":
            return parse_cidrs(raw)
        value = str(raw).strip()
        if self.kind == "choice" and value not in self.choices:
            raise FieldError(f"Choose one of {', '.join(self.choices)}.")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise FieldError(self.help or "This value is not valid here.")
        return value


def parse_cidrs(raw: Any) -> list[str]:
    """IPv4 networks from a list or from text (separated by commas or spaces), as Terraform's api_authorized_ranges
    takes them: 1 to MAX_CIDRS canonical CIDRs, duplicates dropped, order kept.  Raises FieldError.  Pure."""
    items = raw if isinstance(raw, (list, tuple)) else _CIDR_SEPARATORS.split(str(raw))
    ranges: list[str] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}/\d{1,2}", item):
            raise FieldError(f"{item} is not an IPv4 range in CIDR notation such as 203.0.113.0/24.")
        try:
            network = ipaddress.IPv4Network(item, strict=False)
        except ValueError:
            raise FieldError(f"{item} is not an IPv4 range in CIDR notation such as 203.0.113.0/24.") from None
        if str(network) != item:
            raise FieldError(f"{item} has host bits set; the range is {network}.")
        if item not in ranges:
            ranges.append(item)
    if not ranges:
        raise FieldError("Give at least one range; 0.0.0.0/0 admits any address.")
    if len(ranges) > MAX_CIDRS:
        raise FieldError(f"Give at most {MAX_CIDRS} ranges.")
    return ranges


@dataclass(frozen=True)
class Credential:
    name: str  # form field
    env: str  # the provider plugin's environment variable
    label: str


@dataclass(frozen=True)
class Provider:
    name: str
    label: str
    module: str  # infra/modules/<module>
    fields: tuple[WizardField, ...]
    credentials: tuple[Credential, ...] = ()
    # extra cross-field rules: (fields) -> {field: message}
    checks: tuple[Callable[[dict[str, Any]], dict[str, str]], ...] = field(default_factory=tuple)


def _pool_bounds(values: dict[str, Any]) -> dict[str, str]:
    if values.get("user_min_nodes", 0) > values.get("user_max_nodes", 0):
        return {"user_min_nodes": "The minimum cannot exceed the maximum."}
    return {}


def _gpu_pool(values: dict[str, Any]) -> dict[str, str]:
    if values.get("gpu_enabled") and values.get("gpu_max_nodes", 0) < 1:
        return {"gpu_max_nodes": "A GPU pool needs at least one node at most."}
    return {}


def _filestore_size(values: dict[str, Any]) -> dict[str, str]:
    if values.get("home_storage_gb", 0) > 65433:
        return {"home_storage_gb": "Filestore BASIC_HDD holds at most 65433 GB."}
    return {}


def _port_order(values: dict[str, Any]) -> dict[str, str]:
    if values["port_last"] - values["port_first"] < 2:
        return {"port_last": "The range needs at least three ports (each hub takes three)."}
    return {}


def _gpu_fields(machine_default: str) -> tuple[WizardField, ...]:
    return (
        WizardField("gpu_enabled", "GPU node pool", False, "bool"),
        WizardField("gpu_machine_type", "GPU machine type", machine_default),
        WizardField("gpu_max_nodes", "GPU nodes at most", 2, "int", minimum=0, maximum=100),
    )


def _api_access() -> WizardField:
    return WizardField("api_authorized_ranges", "API server reachable from", ["0.0.0.0/0"], "cidrs",
                       help="IPv4 ranges (CIDR) separated by commas; 0.0.0.0/0 admits any address. "
                            "Include the console's own address.")


def _common(core_default: str, user_default: str) -> tuple[WizardField, ...]:
    return (
        WizardField("name", "Cluster name", None, pattern=NAME_RE.pattern,
                    help="3 to 30 characters: lower-case letters, digits and hyphens, starting with a letter."),
        WizardField("core_machine_type", "Core node machine type", core_default),
        WizardField("core_node_count", "Core nodes", 1, "int", minimum=1, maximum=10),
        WizardField("user_machine_type", "User node machine type", user_default),
        WizardField("user_min_nodes", "User nodes at least", 0, "int", minimum=0, maximum=500),
        WizardField("user_max_nodes", "User nodes at most", 10, "int", minimum=1, maximum=500),
        WizardField("home_storage_gb", "Home storage (GB)", 1024, "int", minimum=100, maximum=102400),
    )


PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    Provider("local", "This machine (local JupyterHub processes)", "local-cluster", (
        WizardField("name", "Cluster name", None, pattern=NAME_RE.pattern,
                    help="3 to 30 characters: lower-case letters, digits and hyphens, starting with a letter."),
        WizardField("data_dir", "Data directory", None, pattern=r"/.*",
                    help="An absolute path where the cluster's hubs live."),
        WizardField("port_first", "First port", 18000, "int", minimum=1024, maximum=65535),
        WizardField("port_last", "Last port", 18999, "int", minimum=1024, maximum=65535),
    ), checks=(_port_order,)),
    Provider("gke", "Google Kubernetes Engine", "gke-cluster", (
        WizardField("project_id", "Google Cloud project", None, pattern=r"[a-z][a-z0-9-]{4,28}[a-z0-9]",
                    help="A project id: 6 to 30 lower-case letters, digits and hyphens."),
        WizardField("region", "Region", "us-central1", pattern=r"[a-z]+-[a-z]+[0-9]",
                    help="A region such as us-central1."),
        *_common("e2-standard-2", "n2-highmem-4"), *_gpu_fields("n1-standard-8"),
        WizardField("gpu_accelerator_type", "GPU type", "nvidia-tesla-t4"), _api_access(),
    ), (Credential("google_credentials", "GOOGLE_CREDENTIALS", "Service account key (JSON)"),),
        checks=(_pool_bounds, _gpu_pool, _filestore_size)),
    Provider("eks", "Amazon EKS", "eks-cluster", (
        WizardField("region", "Region", "us-east-1", pattern=r"[a-z]{2}(-gov)?-[a-z]+-[0-9]",
                    help="A region such as us-east-1."),
        *_common("t3.large", "r5.xlarge"), *_gpu_fields("g4dn.xlarge"), _api_access(),
    ), (Credential("aws_access_key_id", "AWS_ACCESS_KEY_ID", "Access key id"),
        Credential("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "Secret access key")),
        checks=(_pool_bounds, _gpu_pool)),
    Provider("aks", "Azure Kubernetes Service", "aks-cluster", (
        WizardField("region", "Region", "eastus", pattern=r"[a-z]+[a-z0-9]*",
                    help="An Azure location such as eastus."),
        *_common("Standard_D2s_v5", "Standard_E4s_v5"), *_gpu_fields("Standard_NC4as_T4_v3"), _api_access(),
    ), (Credential("arm_client_id", "ARM_CLIENT_ID", "Client id"),
        Credential("arm_client_secret", "ARM_CLIENT_SECRET", "Client secret"),
        Credential("arm_tenant_id", "ARM_TENANT_ID", "Tenant id"),
        Credential("arm_subscription_id", "ARM_SUBSCRIPTION_ID", "Subscription id")),
        checks=(_pool_bounds, _gpu_pool)),
)}

# What every cloud module's outputs give the Kubernetes backend.
CLOUD_OUTPUTS = frozenset({"cluster_name", "endpoint", "cluster_ca_certificate", "kubeconfig", "home_storage"})
LOCAL_OUTPUTS = frozenset({"data_dir", "port_range"})


def validate(provider_name: str, raw: dict[str, Any], credentials: dict[str, str] | None = None,
             require_credentials: bool = True) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(Terraform variables, provider environment, errors by field) for a wizard submission. Pure."""
    provider = PROVIDERS.get(provider_name)
    if provider is None:
        return {}, {}, {"provider": f"Choose one of {', '.join(PROVIDERS)}."}
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for wizard_field in provider.fields:
        try:
            values[wizard_field.name] = wizard_field.parse(raw.get(wizard_field.name))
        except FieldError as exc:
            errors[wizard_field.name] = str(exc)
    if not errors:
        for check in provider.checks:
            errors.update(check(values))
    env: dict[str, str] = {}
    for credential in provider.credentials:
        value = (credentials or {}).get(credential.name, "")
        if value and value.strip():
            env[credential.env] = value.strip()
        elif require_credentials:
            errors[credential.name] = f"{credential.label} is required."
    return (values, env, {}) if not errors else ({}, {}, errors)
