#!/usr/bin/env bash
# System packages pfd needs: Quantum ESPRESSO's pw.x and its pseudopotentials (Debian).
# Installs them when missing and running as root; otherwise says exactly what to run.
set -euo pipefail
need=()
command -v pw.x >/dev/null 2>&1 || need+=(quantum-espresso)
[ -d /usr/share/espresso/pseudo ] || need+=(quantum-espresso-data)
if [ ${#need[@]} -eq 0 ]; then
  echo "system deps: pw.x and pseudopotentials present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "pfd needs these Debian packages: ${need[*]}" >&2
  echo "install them with:  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  echo "(or point labeller.qe.command / labeller.qe.pseudo_dir at your own QE build)" >&2
  exit 1
fi
echo "system deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v pw.x >/dev/null
echo "system deps: installed ${need[*]}"
