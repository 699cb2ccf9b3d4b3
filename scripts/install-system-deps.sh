#!/usr/bin/env bash
# System packages pfd needs (Debian): Quantum ESPRESSO's pw.x and its pseudopotentials,
# CP2K (cp2k.psmp) and its basis-set/pseudopotential data; for the tests also OpenStack
# Swift (a real S3 server, scripts/swift_s3.py), headless Chromium (UI screenshot) and
# SLURM with munge (a real one-node batch system, scripts/slurm_local.py).
# Installs them when missing and running as root; otherwise says exactly what to run.
set -euo pipefail
need=()
command -v pw.x >/dev/null 2>&1 || need+=(quantum-espresso)
[ -d /usr/share/espresso/pseudo ] || need+=(quantum-espresso-data)
command -v cp2k.psmp >/dev/null 2>&1 || need+=(cp2k)
[ -f /usr/share/cp2k/BASIS_MOLOPT ] || need+=(cp2k-data)
if [ "${PFD_WITH_TEST_DEPS:-1}" = 1 ]; then
  command -v swift-ring-builder >/dev/null 2>&1 \
    || need+=(swift-proxy swift-account swift-container swift-object)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld)
  command -v slurmd >/dev/null 2>&1 || need+=(slurmd)
  command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
  command -v munged >/dev/null 2>&1 || need+=(munge)
fi
if [ ${#need[@]} -eq 0 ]; then
  echo "system deps: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "pfd needs these Debian packages: ${need[*]}" >&2
  echo "install them with:  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  echo "(or point labeller.qe.command / labeller.qe.pseudo_dir, labeller.cp2k.command /" >&2
  echo " labeller.cp2k.data_dir at your own builds)" >&2
  exit 1
fi
echo "system deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v pw.x >/dev/null
command -v cp2k.psmp >/dev/null
echo "system deps: installed ${need[*]}"
