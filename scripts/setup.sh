#!/usr/bin/env bash
# Create .venv and install nnfit with its test tools. Safe to rerun.
# EXTRAS picks the optional dependencies (default: dev, the test tools); `make bench` adds
# bench, the peer frameworks the benchmarks compare with (Lightning, Keras, skorch: ~1.5 GB),
# which nothing else needs; `make test` adds all (TensorBoard and MLflow, the --log sinks the
# logger tests read back).
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
# Headless Chromium for the browser test of the HTML report (tests/test_report_browser.py),
# asked for by `make test` (BROWSER=1): Debian's package, where the machine allows it (root and
# apt-get). Never fails the setup: without it that test skips and says why.
if [ "${BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
    >/dev/null 2>&1 || echo "chromium not installed: the report's browser test will skip" >&2
fi
"$VENV/bin/python" -c "import nnfit, torch; print(f'nnfit {nnfit.__version__} with torch {torch.__version__} ready in $VENV')"
