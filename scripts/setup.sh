#!/usr/bin/env bash
# Create .venv and install nnfit with its test tools. Safe to rerun.
# EXTRAS picks the optional dependencies (default: dev, the test tools); `make bench` adds
# bench, the peer frameworks the benchmarks compare with (Lightning, Keras, skorch: ~1.5 GB),
# which nothing else needs.
# Torch: the CPU build (torch==2.13.0) where no NVIDIA GPU is visible, otherwise the default
# (CUDA) build; the package itself asks for torch>=2.10 (the floor that excludes the known
# torch.load CVEs).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-dev}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "nnfit needs Python >= 3.10 (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
TORCH_OK='import sys, torch; v = torch.__version__.split("+")[0].split("."); sys.exit((int(v[0]), int(v[1])) < (2, 10))'
if ! "$VENV/bin/python" -c "$TORCH_OK" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" "torch>=2.10"
  else
    "${PIP[@]}" "torch==2.13.0"
  fi
fi
"${PIP[@]}" -e ".[$EXTRAS]"
"$VENV/bin/python" -c "import nnfit, torch; print(f'nnfit {nnfit.__version__} with torch {torch.__version__} ready in $VENV')"
