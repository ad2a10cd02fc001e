"""infra/runner.py against the real terraform CLI, on the provider-free local-cluster module."""
import json
import os
import shutil

import pytest

from infra.runner import RUN_FILE, TerraformError, TerraformRunner, WorkspaceBusy, backend_file_text, summarise


@pytest.fixture
def runner(tmp_path):
    return TerraformRunner(tmp_path / "terraform", "north", "local-cluster")


@pytest.fixture
def variables(tmp_path):
    return {"name": "north", "data_dir": str(tmp_path / "north"), "port_first": 19000, "port_last": 19099}


def test_plan_apply_noop_change_destroy(runner, variables, tmp_path):
    log = []
    first = runner.plan(variables, log.append)
    assert first.as_dict() == {"add": ["terraform_data.cluster"], "change": [], "destroy": []}
    assert not (tmp_path / "north").exists()  # a plan creates nothing

    outputs = runner.apply(log.append)
    assert (tmp_path / "north" / "hubs").is_dir()
    assert outputs["port_range"] == {"value": [19000, 19099], "sensitive": False}
    assert outputs["hubs_dir"]["value"] == str(tmp_path / "north" / "hubs")

    assert runner.plan(variables, log.append).empty
    changed = runner.plan({**variables, "port_last": 19500}, log.append)
    assert changed.as_dict() == {"add": [], "change": ["terraform_data.cluster"], "destroy": []}
    moved = runner.plan({**variables, "data_dir": str(tmp_path / "elsewhere")}, log.append)
    assert moved.add == moved.destroy == ["terraform_data.cluster"]  # a replacement

    runner.destroy(variables, log.append)
    assert not (tmp_path / "north").exists()
    assert runner.outputs() == {}


def test_python_terraform_defects_are_stepped_around(runner, variables):
    log = []
    runner.plan(variables, log.append)
    runner.apply(log.append)
    runner.destroy(variables, log.append)
    commands = [line for line in log if line.startswith("$ ")]
    apply = next(c for c in commands if c.startswith("$ apply"))
    destroy = next(c for c in commands if c.startswith("$ destroy"))
    assert apply.endswith("hubfleet.tfplan") and "-auto-approve" not in apply and "-var" not in apply
    assert "-auto-approve" in destroy and "-force" not in destroy
    assert not any("-synchronous" in c for c in commands)
    # variables travel in the workspace's tfvars file (0600), never on a command line
    assert all(variables["data_dir"] not in c for c in commands)
    assert oct(os.stat(runner.dir / "terraform.tfvars.json").st_mode & 0o777) == "0o600"


def test_apply_needs_a_saved_plan_and_uses_it_once(runner, variables):
    with pytest.raises(TerraformError, match="no saved plan"):
        runner.apply(lambda line: None)
    runner.plan(variables, lambda line: None)
    runner.apply(lambda line: None)
    with pytest.raises(TerraformError, match="no saved plan"):
        runner.apply(lambda line: None)


def test_failing_provisioner_fails_apply_with_terraforms_error(runner, variables, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    runner.plan({**variables, "data_dir": str(blocker / "north")}, lambda line: None)
    log = []
    with pytest.raises(TerraformError) as failure:
        runner.apply(log.append)
    assert "terraform apply failed" in str(failure.value) and "local-exec provisioner error" in str(failure.value)
    assert any("Not a directory" in line for line in log)


def test_module_validation_matches_the_wizard(runner, variables):
    with pytest.raises(TerraformError, match="The first port must be a whole number from 1024 to 65535"):
        runner.plan({**variables, "port_first": 80}, lambda line: None)
    with pytest.raises(TerraformError, match="at least three ports"):
        runner.plan({**variables, "port_last": variables["port_first"] + 1}, lambda line: None)


def test_one_run_per_workspace(runner, variables):
    with runner.lock(lambda line: None):
        with pytest.raises(WorkspaceBusy):
            runner.plan(variables, lambda line: None)


def test_a_run_left_by_a_dead_worker_is_reported_and_released(runner, variables):
    runner.plan(variables, lambda line: None)
    (runner.dir / RUN_FILE).write_text(json.dumps({"pid": 2 ** 22 + 7, "command": "apply",
                                                   "started": "2026-01-01 00:00:00"}))
    (runner.dir / ".terraform.tfstate.lock.info").write_text("{}")
    log = []
    assert runner.plan(variables, log.append).add == ["terraform_data.cluster"]
    assert any("did not finish (apply" in line for line in log)
    assert any("released the state lock" in line for line in log)
    assert not (runner.dir / RUN_FILE).exists()


def test_credentials_are_blanked_from_output(tmp_path, variables):
    secret = "AKIA-not-a-real-key-0042"
    runner = TerraformRunner(tmp_path / "tf", "north", "local-cluster", env={"AWS_ACCESS_KEY_ID": secret})
    assert runner.redact(f"using key {secret} now") == "using key ******** now"
    log = []
    runner.plan({**variables, "name": secret.lower()[:4] + "-x"}, log.append)
    assert not any(secret in line for line in log)


def test_plan_summary_reads_terraform_json():
    plan = {"resource_changes": [
        {"address": "a.new", "change": {"actions": ["create"]}},
        {"address": "a.same", "change": {"actions": ["no-op"]}},
        {"address": "a.edit", "change": {"actions": ["update"]}},
        {"address": "a.swap", "change": {"actions": ["delete", "create"]}},
        {"address": "a.gone", "change": {"actions": ["delete"]}},
        {"address": "data.x", "change": {"actions": ["read"]}}]}
    summary = summarise(plan)
    assert summary.as_dict() == {"add": ["a.new", "a.swap"], "change": ["a.edit"], "destroy": ["a.swap", "a.gone"]}


def test_remote_state_backend_is_configured_and_its_secrets_blanked(tmp_path):
    backend = {"type": "s3", "config": {"bucket": "hubfleet-state", "key": "campus.tfstate",
                                        "secret_key": "s3-secret-key-value"}}
    runner = TerraformRunner(tmp_path / "tf", "campus", "local-cluster", backend=backend)
    runner._sync_module()
    assert (runner.dir / "backend.tf").read_text() == 'terraform {\n  backend "s3" {}\n}\n'
    assert backend_file_text(backend["config"]) == ('bucket = "hubfleet-state"\nkey = "campus.tfstate"\n'
                                                    'secret_key = "s3-secret-key-value"\n')
    assert runner.redact("secret_key = s3-secret-key-value") == "secret_key = ********"


def test_backend_file_escapes_what_hcl_would_interpolate():
    text = backend_file_text({"key": 'a "quoted" ${var.x} %{if} \\ value', "use_lockfile": True, "retries": 3,
                              "assume_role": {"role_arn": "arn:aws:iam::1:role/x"}})
    assert text == ('key = "a \\"quoted\\" $${var.x} %%{if} \\\\ value"\nuse_lockfile = true\nretries = 3\n'
                    'assume_role = {\n  "role_arn" = "arn:aws:iam::1:role/x"\n}\n')


@pytest.fixture
def recording_terraform(tmp_path):
    """A TERRAFORM_BIN that records the command line of every Terraform process, then runs the real terraform."""
    calls = tmp_path / "argv.log"
    wrapper = tmp_path / "terraform-recording"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\nexec {shutil.which("terraform")} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, calls


def test_backend_config_reaches_terraform_in_a_private_file_not_its_command_line(tmp_path, variables,
                                                                                  recording_terraform):
    wrapper, calls = recording_terraform
    # the local backend takes its config the way s3, gcs and azurerm do; this value stands for a credential
    state = tmp_path / "remote-state-token-8f2k"
    backend = {"type": "local", "config": {"path": str(state / "campus.tfstate")}}
    runner = TerraformRunner(tmp_path / "tf", "campus", "local-cluster", backend=backend, terraform_bin=str(wrapper))
    log = []
    runner.plan(variables, log.append)
    runner.apply(log.append)
    assert (state / "campus.tfstate").exists()  # Terraform used the config
    argv = calls.read_text()
    assert "init" in argv and "-backend-config=hubfleet.tfbackend" in argv
    assert "remote-state-token-8f2k" not in argv
    assert not any("remote-state-token-8f2k" in line for line in log)
    assert not (runner.dir / "hubfleet.tfbackend").exists()  # needed by init only
    # where Terraform keeps the config it was given is private too
    assert oct(os.stat(runner.dir / ".terraform" / "terraform.tfstate").st_mode & 0o777) == "0o600"


def _modes(root) -> dict[str, str]:
    return {str(path.relative_to(root)): oct(path.stat().st_mode & 0o777) for path in [root, *root.rglob("*")]}


def test_state_plans_and_workspaces_are_private(runner, variables):
    log = []
    runner.plan(variables, log.append)
    assert (runner.dir / "hubfleet.tfplan").exists()
    planned = _modes(runner.root)
    runner.apply(log.append)
    runner.plan({**variables, "port_last": 19500}, log.append)
    runner.apply(log.append)  # a second apply: Terraform keeps a backup of the state it replaced
    assert (runner.dir / "terraform.tfstate").exists() and (runner.dir / "terraform.tfstate.backup").exists()
    for modes in (planned, _modes(runner.root)):
        assert {path: mode for path, mode in modes.items()
                if mode not in ("0o600", "0o700")} == {}, "readable by others"
    assert planned["north"] == planned["."] == "0o700"
    assert planned["north/hubfleet.tfplan"] == "0o600"


def test_an_existing_workspace_is_made_private(runner, variables):
    runner.dir.mkdir(parents=True)
    runner.root.chmod(0o755)
    runner.dir.chmod(0o755)
    runner.plan(variables, lambda line: None)
    assert oct(runner.root.stat().st_mode & 0o777) == oct(runner.dir.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("name", ['$(touch pwned)', '`touch pwned`', '"; touch pwned; echo "', "'; touch pwned; '"])
def test_a_data_dir_that_looks_like_shell_is_only_a_path(runner, variables, tmp_path, name):
    data_dir = tmp_path / f"north {name}"
    weird = {**variables, "data_dir": str(data_dir)}
    runner.plan(weird, lambda line: None)
    runner.apply(lambda line: None)
    assert (data_dir / "hubs").is_dir()
    runner.destroy(weird, lambda line: None)
    assert not data_dir.exists()  # removed: the path reached rmdir whole
    assert not list(tmp_path.rglob("pwned"))  # and nothing in it ran
