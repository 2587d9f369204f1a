#!/usr/bin/env bash
# Install PyTorch into the given Python environment before the package itself (which requires
# torch without pinning it). Where no NVIDIA GPU is present the CPU build is installed first
# (about 200 MB instead of several GB); with a GPU the default (CUDA) build. Does nothing if torch
# is already importable.  Usage: scripts/install_torch.sh PYTHON
set -euo pipefail
PY=${1:-python3}
if "$PY" -c "import torch" >/dev/null 2>&1; then
    exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install torch
else
    "$PY" -m pip install "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu \
        --retries 0 --timeout 10 || "$PY" -m pip install torch
fi
