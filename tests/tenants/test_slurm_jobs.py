"""Profiles as Slurm job options: the shape the environment accepts, every violation of a cluster's policy as a field
error, the defaults, and the batch script's exact text."""
from __future__ import annotations

import pytest

from tenants.environment import validate_environment
from tenants.policy import DEFAULT_POLICY
from tenants.slurm_jobs import batch_script, check_profiles, check_shape, job_options, memory_option

SETTINGS = {
    "slurm_conf": "/etc/slurm/slurm.conf",
    "partitions": [
        {"name": "debug", "max_time_minutes": 240, "max_cpus": 4, "max_memory_gb": 16, "max_gpus": 0},
        {"name": "gpu", "max_time_minutes": 1440, "max_cpus": 16, "max_memory_gb": 128, "max_gpus": 2},
    ],
    "qos": ["normal", "short"],
}
IMAGE = "quay.io/jupyter/scipy-notebook:2025-01-06"


def environment(*slurm_options) -> dict:
    return {"image": IMAGE, "profiles": [{"display_name": f"P{i}", "slurm": options}
                                         for i, options in enumerate(slurm_options)]}


def test_options_within_the_policy_pass():
    assert check_profiles(environment({"partition": "debug", "qos": "short", "time_minutes": 240, "cpus": 4,
                                       "memory_gb": 16, "gpus": 0},
                                      {"partition": "gpu", "gpus": 2, "memory_gb": 0.5},
                                      {}), SETTINGS) == {}
    # a profile without job options runs on the defaults, which fit by construction
    assert check_profiles({"profiles": [{"display_name": "plain"}]}, SETTINGS) == {}


@pytest.mark.parametrize("options, field, message", [
    ({"time_minutes": 300}, "time_minutes", "At most 240 minutes on partition debug."),
    ({"partition": "gpu", "time_minutes": 2000}, "time_minutes", "At most 1440 minutes on partition gpu."),
    ({"cpus": 5}, "cpus", "At most 4 CPUs on partition debug."),
    ({"memory_gb": 16.5}, "memory_gb", "At most 16 GB of memory on partition debug."),
    ({"gpus": 1}, "gpus", "Partition debug has no GPUs."),
    ({"partition": "gpu", "gpus": 3}, "gpus", "At most 2 GPUs on partition gpu."),
    ({"partition": "bigmem"}, "partition", ("Partition bigmem is not offered on this cluster; choose one of "
                                            "debug, gpu.")),
    ({"qos": "high"}, "qos", "QOS high is not offered on this cluster; choose one of normal, short."),
    ({"time_minutes": 0}, "time_minutes", "Enter a whole number of minutes, at least 1."),
    ({"time_minutes": "an hour"}, "time_minutes", "Enter a whole number of minutes, at least 1."),
    ({"cpus": 1.5}, "cpus", "Enter a whole number of CPUs, at least 1."),
    ({"memory_gb": -2}, "memory_gb", "Enter the memory in GB as a number above 0, such as 4 or 0.5."),
    ({"gpus": True}, "gpus", "Enter a whole number of GPUs, at least 0."),
    ({"partition": "de bug"}, "partition", "Enter the partition's name, one word such as debug."),
    ({"partition": "{cmd}"}, "partition", "Enter the partition's name, one word such as debug."),
    ({"nodes": 2}, "nodes", "Unknown job option; known: partition, qos, time_minutes, cpus, memory_gb, gpus."),
])
def test_each_violation_is_an_error_on_its_field(options, field, message):
    errors = check_profiles(environment({"cpus": 1}, options), SETTINGS)

    assert errors == {f"profiles.1.slurm.{field}": message}


def test_several_violations_of_one_profile_are_all_reported():
    errors = check_profiles(environment({"time_minutes": 999, "cpus": 64, "qos": "vip"}), SETTINGS)

    assert errors == {"profiles.0.slurm.time_minutes": "At most 240 minutes on partition debug.",
                      "profiles.0.slurm.cpus": "At most 4 CPUs on partition debug.",
                      "profiles.0.slurm.qos": "QOS vip is not offered on this cluster; choose one of normal, short."}


def test_a_cluster_without_qos_or_partitions_says_so():
    assert check_profiles(environment({"qos": "normal"}), {"partitions": SETTINGS["partitions"]}) == \
        {"profiles.0.slurm.qos": "This cluster offers no QOS to choose; leave it out."}
    assert check_profiles(environment({"cpus": 1}), {"partitions": []}) == \
        {"profiles.0.slurm.partition": "This cluster offers no partition to run servers in."}


def test_the_environment_accepts_job_options_by_shape_alone():
    data = {"image": IMAGE, "profiles": [
        {"display_name": "Long", "slurm": {"partition": "anything", "time_minutes": "600", "memory_gb": "4",
                                           "cpus": "", "qos": None}},
        {"display_name": "Plain", "slurm": {}},
        {"display_name": "Bad", "slurm": {"cpus": "many", "walltime": 5}},
        {"display_name": "Worse", "slurm": "debug"},
    ]}
    clean, errors = validate_environment(data, DEFAULT_POLICY)

    assert errors == {"profiles.2.slurm.cpus": "Enter a whole number of CPUs, at least 1.",
                      "profiles.2.slurm.walltime": "Unknown job option; known: partition, qos, time_minutes, cpus, "
                                                  "memory_gb, gpus.",
                      "profiles.3.slurm": "Give the job options as an object, such as {\"partition\": \"debug\"}."}
    clean, errors = validate_environment({**data, "profiles": data["profiles"][:2]}, DEFAULT_POLICY)
    assert errors == {}
    assert clean["profiles"][0]["slurm"] == {"partition": "anything", "time_minutes": 600, "memory_gb": 4}
    assert "slurm" not in clean["profiles"][1]
    assert check_shape({"cpus": "8", "gpus": 0.0}) == ({"cpus": 8, "gpus": 0}, {})


def test_defaults_fill_what_a_profile_leaves_out():
    assert job_options(None, SETTINGS) == {"partition": "debug", "qos": None, "time_minutes": 60, "cpus": 1,
                                           "memory_gb": 2, "gpus": 0}
    assert job_options({"partition": "gpu", "gpus": 1, "qos": "short"}, SETTINGS) == {
        "partition": "gpu", "qos": "short", "time_minutes": 60, "cpus": 1, "memory_gb": 2, "gpus": 1}
    # the default time and memory never exceed the partition's maxima
    tight = {"partitions": [{"name": "tiny", "max_time_minutes": 30, "max_memory_gb": 1}]}
    assert job_options({}, tight) == {"partition": "tiny", "qos": None, "time_minutes": 30, "cpus": 1,
                                      "memory_gb": 1, "gpus": 0}
    # without the cluster's settings: Slurm's default partition
    assert job_options({"cpus": 2})["partition"] is None


def test_the_batch_script_says_exactly_what_slurm_receives():
    options = job_options({"partition": "gpu", "qos": "short", "time_minutes": 90, "cpus": 4, "memory_gb": 8,
                           "gpus": 2}, SETTINGS)

    assert batch_script(options) == (
        "#!/bin/bash\n"
        "#SBATCH --job-name={job_name}\n"
        "#SBATCH --partition=gpu\n"
        "#SBATCH --qos=short\n"
        "#SBATCH --time=90\n"
        "#SBATCH --cpus-per-task=4\n"
        "#SBATCH --mem=8G\n"
        "#SBATCH --gres=gpu:2\n"
        "#SBATCH --output={homedir}/jupyterhub_slurmspawner_%j.log\n"
        "#SBATCH --chdir={homedir}\n"
        "#SBATCH --export={keepvars}\n"
        "\n"
        "{cmd}\n")


def test_the_batch_script_leaves_out_an_unset_qos_and_no_gpus_and_formats_like_batchspawner():
    script = batch_script(job_options(None, SETTINGS), command="jupyterhub-singleuser --debug")

    assert "--qos" not in script and "--gres" not in script
    assert script.splitlines()[-1] == "jupyterhub-singleuser --debug"
    filled = batch_script(job_options({"memory_gb": 0.5}, SETTINGS)).format(
        job_name="hubfleet-north-ada", homedir="/home/ada", keepvars="PATH,JUPYTERHUB_API_TOKEN", cmd="run")
    assert "#SBATCH --job-name=hubfleet-north-ada\n" in filled
    assert "#SBATCH --mem=512M\n" in filled
    assert "#SBATCH --output=/home/ada/jupyterhub_slurmspawner_%j.log\n" in filled
    assert filled.endswith("\nrun\n")
    assert [memory_option(v) for v in (1, 2.0, 0.25, 1.5)] == ["1G", "2G", "256M", "1536M"]
