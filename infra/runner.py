"""The one adapter over Terraform (python-terraform builds the commands; this module runs them).

A workspace is a directory ``<root>/<workspace>/`` holding a copy of the module's ``.tf`` files, the variables
(``terraform.tfvars.json``), the saved plan and, with the default local backend, the state.  Every run takes the
workspace's lock; a run left behind by a killed worker is detected, its Terraform process stopped and the lock
released, and the next run says so in its log.

State and plans hold secrets (a kubeconfig, the backend's credentials), so the root and every workspace are 0700,
files written here 0600, and Terraform runs with umask 077.  Secrets never reach a command line, where any user
sees them (``ps``): provider credentials go in Terraform's environment, the backend's config in a 0600 file given
to ``init -backend-config=FILE`` and removed after it.

python-terraform 0.10.1 predates Terraform 0.15 and has defects this adapter steps around:

- ``Terraform.destroy()`` always passes ``-force``, which Terraform >= 0.15 rejects: destroy is built here with
  ``-auto-approve``.
- ``Terraform.apply()`` without ``skip_plan=True`` passes ``-auto-approve=false`` and, given no plan file, waits for
  an approval no one can give: apply here only ever applies a saved plan file, which needs no approval.
- ``cmd(..., synchronous=False)`` pops ``synchronous`` only after building the command line, so ``-synchronous=false``
  reaches Terraform; and ``cmd`` logs Terraform's stderr, which may quote variable values.  Commands are therefore
  built with ``generate_cmd_string`` and run here, streaming output line by line, with secrets blanked.
- a ``var=`` dict is written to a temporary var file outside the workspace; variables here live in the workspace's
  own tfvars file instead, and never on a command line.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
from python_terraform import IsFlagged, Terraform

MODULES = Path(__file__).resolve().parent / "modules"
PLAN_FILE = "hubfleet.tfplan"
VARS_FILE = "terraform.tfvars.json"
RUN_FILE = ".hubfleet-run.json"
LOCK_FILE = ".hubfleet.lock"
BACKEND_FILE = "hubfleet.tfbackend"
Log = Callable[[str], None]


class TerraformError(RuntimeError):
    """Terraform failed; the message carries its own error text (secrets blanked)."""


class WorkspaceBusy(RuntimeError):
    """Another run holds the workspace."""


@dataclass
class PlanSummary:
    add: list[str] = field(default_factory=list)
    change: list[str] = field(default_factory=list)
    destroy: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.add or self.change or self.destroy)

    def as_dict(self) -> dict[str, list[str]]:
        return {"add": self.add, "change": self.change, "destroy": self.destroy}


def summarise(plan: dict[str, Any]) -> PlanSummary:
    """Addresses to add, change and destroy from ``terraform show -json`` of a plan (a replace is both). Pure."""
    summary = PlanSummary()
    for change in plan.get("resource_changes", []):
        actions = change.get("change", {}).get("actions", [])
        address = change["address"]
        if "create" in actions:
            summary.add.append(address)
        if "delete" in actions:
            summary.destroy.append(address)
        if actions == ["update"]:
            summary.change.append(address)
    return summary


def _first_error(lines: list[str], most: int = 12) -> str:
    """': Error: summary — detail...' from Terraform's first error block, box drawing removed; '' if none."""
    start = next((i for i, line in enumerate(lines) if "Error:" in line), None)
    if start is None:
        return ""
    block = []
    for line in lines[start:start + most]:
        text = line.strip(" │╷╵")
        if line.strip() == "╵":
            break
        if text:
            block.append(text)
    return ": " + " ".join(block)


def _terraform_process() -> None:
    # Terraform gets SIGTERM (and stops gracefully, writing its state) if the worker that runs it dies; what it
    # writes (state, plans, .terraform/ with the backend's config) is for this user only.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()
    os.umask(0o077)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # made before by an older version, or under another umask


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _hcl(value: Any) -> str:
    """A value in HCL's syntax (a .tfbackend file): JSON's strings, numbers and booleans are HCL's, but "${" and
    "%{" start templates in HCL and are escaped."""
    if isinstance(value, dict):
        return "{\n" + "".join(f"  {json.dumps(str(k))} = {_hcl(v)}\n" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_hcl(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value).replace("${", "$${").replace("%{", "%%{")
    return json.dumps(value)


def backend_file_text(config: dict[str, Any]) -> str:
    """The backend's config as a .tfbackend file (one ``key = value`` per line). Pure."""
    return "".join(f"{key} = {_hcl(value)}\n" for key, value in config.items())


class TerraformRunner:
    """Runs one module in one workspace.

    ``backend``: ``None`` for local state in the workspace, or ``{"type": "s3"|"gcs"|"azurerm", "config": {...}}``
    (the config goes to ``init`` in a 0600 file).  ``env``: provider credentials as environment variables; their
    values never reach a log.
    """

    def __init__(self, root: str | Path, workspace: str, module: str, backend: dict | None = None,
                 env: dict[str, str] | None = None, terraform_bin: str = "terraform"):
        self.root = Path(root)
        self.dir = self.root / workspace
        self.module_dir = MODULES / module
        self.backend = backend
        self.env = dict(env or {})
        self.tf = Terraform(working_dir=str(self.dir), terraform_bin_path=terraform_bin)

    # -- secrets ------------------------------------------------------------------------------------------------

    def _secret_values(self) -> list[str]:
        values = [v for v in self.env.values() if v]
        for config_value in ((self.backend or {}).get("config") or {}).values():
            if isinstance(config_value, str) and len(config_value) >= 8:
                values.append(config_value)
        # longest first, so a secret containing another is blanked whole
        return sorted(set(values), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for value in self._secret_values():
            text = text.replace(value, "********")
        return text

    def command_line(self, argv: list[str]) -> str:
        """How a command is shown in the log: without the binary's path, secrets (backend config) blanked."""
        return self.redact("$ " + " ".join(argv[1:]))

    # -- the workspace ------------------------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBFLEET_", "TF_"))}
        rc = self.root / "terraformrc"
        if not rc.exists():
            _private_dir(self.root)
            _write_private(rc, f'plugin_cache_dir = "{self.root / "plugin-cache"}"\n')
            _private_dir(self.root / "plugin-cache")
        env.update({"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1",
                    "TF_CLI_CONFIG_FILE": str(rc), **self.env})
        return env

    def _sync_module(self) -> None:
        """Copy the module's .tf files into the workspace (the module may have changed since the last run)."""
        self._make_dirs()
        for old in self.dir.glob("*.tf"):
            old.unlink()
        for source in self.module_dir.glob("*.tf"):
            _write_private(self.dir / source.name, source.read_text())
        if self.backend:
            _write_private(self.dir / "backend.tf", f'terraform {{\n  backend "{self.backend["type"]}" {{}}\n}}\n')

    def _make_dirs(self) -> None:
        _private_dir(self.root)
        _private_dir(self.dir)

    def write_variables(self, variables: dict[str, Any]) -> None:
        self._make_dirs()
        _write_private(self.dir / VARS_FILE, json.dumps(variables, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def lock(self, log: Log):
        """Hold the workspace for one run; release what a killed run left behind (reported in ``log``)."""
        self._make_dirs()
        with open(os.open(self.dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkspaceBusy(f"another Terraform run holds workspace {self.dir.name}") from None
            self._clear_stale_run(log)
            try:
                yield
            finally:
                (self.dir / RUN_FILE).unlink(missing_ok=True)

    def _clear_stale_run(self, log: Log) -> None:
        run_file = self.dir / RUN_FILE
        if not run_file.exists():
            return
        try:
            stale = json.loads(run_file.read_text())
        except ValueError:
            stale = {}
        log(f"found a run that did not finish ({stale.get('command', '?')}, started {stale.get('started', '?')}); "
            f"its worker stopped")
        pid = stale.get("pid")
        with contextlib.suppress(psutil.Error, TypeError):
            proc = psutil.Process(pid)
            if "terraform" in proc.name():
                log(f"stopping its Terraform process {pid}")
                proc.terminate()
                try:
                    proc.wait(60)
                except psutil.TimeoutExpired:
                    proc.kill()
        info = self.dir / ".terraform.tfstate.lock.info"
        if info.exists():
            info.unlink()
            log("released the state lock it left")
        run_file.unlink()

    def _run(self, log: Log, command: str, *args: str, check: bool = True, **options: Any) -> str:
        """Run one Terraform command in the workspace, streaming its output into ``log``; returns the output."""
        argv = self.tf.generate_cmd_string(command, *args, **options)
        lines = []
        with subprocess.Popen(argv, cwd=self.dir, env=self._environment(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                              preexec_fn=_terraform_process) as proc:
            # The run is recorded before it is announced: a worker killed once the log says it started always
            # leaves the record the next worker clears (``_clear_stale_run``).
            _write_private(self.dir / RUN_FILE, json.dumps({"pid": proc.pid, "command": command,
                                                            "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
            log(self.command_line(argv))
            for line in proc.stdout:
                line = self.redact(line.rstrip("\n"))
                lines.append(line)
                if line.strip():
                    log(line)
        if check and proc.returncode != 0:
            raise TerraformError(f"terraform {command} failed (exit {proc.returncode})" + _first_error(lines))
        return "\n".join(lines)

    def _capture(self, command: str, *args: str, **options: Any) -> str:
        """Run a quiet command (show, output) and return its stdout; raises TerraformError on failure."""
        argv = self.tf.generate_cmd_string(command, *args, **options)
        result = subprocess.run(argv, cwd=self.dir, env=self._environment(), capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, preexec_fn=_terraform_process)
        if result.returncode != 0:
            raise TerraformError(f"terraform {command} failed: {self.redact(result.stderr.strip())[:500]}")
        return result.stdout

    # -- the verbs ------------------------------------------------------------------------------------------------

    def init(self, log: Log) -> None:
        self._sync_module()
        config = (self.backend or {}).get("config")
        if not config:
            self._run(log, "init", no_color=IsFlagged, input=False, reconfigure=IsFlagged)
            return
        # Terraform keeps the config it was given in .terraform/terraform.tfstate (0600 under our umask); the file
        # is needed for this command only.
        _write_private(self.dir / BACKEND_FILE, backend_file_text(config))
        try:
            self._run(log, "init", no_color=IsFlagged, input=False, reconfigure=IsFlagged,
                      backend_config=BACKEND_FILE)
        finally:
            (self.dir / BACKEND_FILE).unlink(missing_ok=True)

    def plan(self, variables: dict[str, Any], log: Log, destroy: bool = False) -> PlanSummary:
        """init, write the variables, ``plan -out``, then summarise ``show -json`` of the saved plan.

        Raises TerraformError (with Terraform's message) or WorkspaceBusy.  Safe to call twice.
        """
        with self.lock(log):
            self.init(log)
            self.write_variables(variables)
            self._run(log, "plan", no_color=IsFlagged, input=False, out=PLAN_FILE, var_file=VARS_FILE,
                      destroy=IsFlagged if destroy else None)
            summary = summarise(json.loads(self._capture("show", PLAN_FILE, json=IsFlagged, no_color=IsFlagged)))
        log(f"plan: {len(summary.add)} to add, {len(summary.change)} to change, {len(summary.destroy)} to destroy")
        return summary

    def apply(self, log: Log) -> dict[str, dict[str, Any]]:
        """Apply the saved plan (and only it); returns the outputs. Raises TerraformError or WorkspaceBusy."""
        with self.lock(log):
            if not (self.dir / PLAN_FILE).exists():
                raise TerraformError("there is no saved plan to apply; plan again")
            try:
                self._run(log, "apply", PLAN_FILE, no_color=IsFlagged, input=False)
            finally:
                # A saved plan is applied once: after success or failure it is stale either way.
                (self.dir / PLAN_FILE).unlink(missing_ok=True)
            return self._outputs()

    def discard_plan(self) -> None:
        """Forget the saved plan (call under :meth:`lock`); safe to call twice."""
        (self.dir / PLAN_FILE).unlink(missing_ok=True)

    def destroy(self, variables: dict[str, Any], log: Log) -> None:
        """Destroy everything in the workspace. Raises TerraformError or WorkspaceBusy. Safe to call twice."""
        with self.lock(log):
            self.init(log)
            self.write_variables(variables)
            self._run(log, "destroy", no_color=IsFlagged, input=False, auto_approve=IsFlagged,
                      var_file=VARS_FILE)

    def outputs(self) -> dict[str, dict[str, Any]]:
        """{name: {"value": ..., "sensitive": bool}} from the state."""
        return self._outputs()

    def _outputs(self) -> dict[str, dict[str, Any]]:
        raw = json.loads(self._capture("output", json=IsFlagged, no_color=IsFlagged) or "{}")
        return {name: {"value": out.get("value"), "sensitive": bool(out.get("sensitive"))}
                for name, out in raw.items()}
