#!/usr/bin/env bash
# Create .venv and install userrep with pinned dependencies. torch comes first, from the CPU wheel
# (`torch==2.13.0`): letting pip resolve torch on its own pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {
  .venv/bin/python -m pip install -q "$@" >.venv/pip.log 2>&1 || { cat .venv/pip.log; exit 1; }
}
pip_install --upgrade pip
pip_install "torch==2.13.0"
pip_install -e ".[dev,ray]"  # ray: the optional Ray engine (+10 s, +240 MB); the local engine never imports it
.venv/bin/python -c "import torch, feast, userrep; assert torch.__version__.startswith('2.13.0'), torch.__version__"
