#!/usr/bin/env bash
# Creates .venv and installs pfd with the whole stack, CPU only.
#   - torch is pinned to 2.13.0 (a CPU wheel of it is provided locally) so nothing pulls CUDA.
#     On a CUDA machine: install a CUDA build of torch 2.13.0 into .venv first and run this
#     with PFD_TORCH_VARIANT=cuda (it keeps that build and builds deepmd-kit for CUDA).
#   - deepmd-kit 3.2.0 is built from its sdist: the PyPI wheel's PyTorch ops are compiled
#     for torch 2.11 and fail to load with 2.13 (see DESIGN.md). MPI discovery is disabled
#     because Debian's QE brings the Open MPI runtime without its headers.
# Idempotent: a stamp keyed on pyproject.toml and this script skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
variant=${PFD_TORCH_VARIANT:-cpu}   # cpu | cuda
case "$variant" in cpu|cuda) ;; *) echo "PFD_TORCH_VARIANT=$variant: allowed cpu, cuda" >&2; exit 2;; esac
VENV=.venv
stamp="$VENV/.pfd-installed"
key=$( (cat pyproject.toml "$0"; echo "$variant") | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  echo "python deps: up to date ($VENV)"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip wheel "setuptools>=68"
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e ".[test]"
if ! "$VENV/bin/python" -c "import deepmd, deepmd.pt.cxx_op as c; assert c.ENABLE_CUSTOMIZED_OP" \
    >/dev/null 2>&1; then
  echo "python deps: building deepmd-kit 3.2.0 from source (about 1-4 minutes)"
  "${pip[@]}" install scikit-build-core setuptools_scm "cmake>=3.25.2" ninja packaging \
    dependency_groups hatch-fancy-pypi-readme
  CMAKE_ARGS="-DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON" DP_ENABLE_TENSORFLOW=0 DP_ENABLE_PYTORCH=1 \
    DP_VARIANT=$variant "${pip[@]}" install --no-build-isolation --no-binary deepmd-kit \
    "deepmd-kit==3.2.0"
fi
"$VENV/bin/python" - <<'PYEOF'
import torch, deepmd.pt.cxx_op as c, sevenn, prefect, chgnet
import os, pathlib
cpu = os.environ.get("PFD_TORCH_VARIANT", "cpu") == "cpu"
assert torch.__version__.startswith("2.13.0") and ("+cpu" in torch.__version__) == cpu, (
    f"torch {torch.__version__} with PFD_TORCH_VARIANT={'cpu' if cpu else 'cuda'}")
assert c.ENABLE_CUSTOMIZED_OP, "deepmd-kit custom ops missing"
assert list((pathlib.Path(chgnet.__file__).parent / "pretrained/0.3.0").glob("*.pth.tar")), (
    "chgnet wheel without its CHGNet 0.3.0 weights")
print(f"python deps: torch {torch.__version__}, prefect {prefect.__version__}, sevenn {sevenn.__version__}")
PYEOF
echo "$key" > "$stamp"
