#!/usr/bin/env bash
# The Slurm tests start a real single-node cluster from Debian's packages (slurmctld, slurmd, the client commands and
# munge for authentication); install them if this machine lacks them.
set -euo pipefail
missing=0
for cmd in slurmctld slurmd sbatch munged; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing=1
done
if [ "$missing" -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Slurm is missing (slurmctld, slurmd, sbatch, munged): install your distribution's slurmctld, slurmd," \
       "slurm-client and munge packages (the Slurm tests fail under `make test` without them)." >&2
  exit 1
fi
echo "installing Slurm and munge"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
  >/dev/null
