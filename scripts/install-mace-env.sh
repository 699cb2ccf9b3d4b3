#!/usr/bin/env bash
# Creates .venv-mace: mace-torch for finetune.backend mace.
#   - Why a second environment: mace-torch 0.3.16 pins e3nn==0.4.4 (its checkpoints use
#     that release's Clebsch-Gordan conventions), SevenNet in .venv needs e3nn>=0.5; the
#     two cannot share one site-packages. pfd reaches it only through subprocesses
#     (mace_run_train, and a worker that evaluates models for ASE).
#   - torch is the same CPU pin as .venv (2.13.0); no MACE weights are downloaded: users
#     give their foundation's .model file, tests build small ones.
# Idempotent: a stamp keyed on this script skips work already done. Never touches .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${PFD_MACE_VENV:-.venv-mace}
stamp="$VENV/.pfd-mace-installed"
key=$(sha256sum < "$0" | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  echo "mace env: up to date ($VENV)"
  exit 0
fi
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip wheel
"${pip[@]}" install "torch==2.13.0" "mace-torch==0.3.16" "e3nn==0.4.4" "ase>=3.25,<3.30"
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$VENV/bin/python" -c "import mace, e3nn, torch; \
from mace.calculators import MACECalculator; \
print(f'mace env: mace-torch {mace.__version__}, e3nn {e3nn.__version__}, torch {torch.__version__}')" \
  2>/dev/null
[ -x "$VENV/bin/mace_run_train" ] || { echo "mace env: no mace_run_train in $VENV" >&2; exit 1; }
echo "$key" > "$stamp"
echo "mace env: installed in $(( $(date +%s) - t0 )) s, $(du -sh "$VENV" | cut -f1)"
