#!/usr/bin/env bash
# Create .venv and install fedbcs-lightning with its test tools.
#
# torch is pinned (TORCH_SPEC) so that pip never resolves an unpinned, multi-GB build.
# With a GPU, set TORCH_SPEC to the torch/torchvision build for your CUDA version.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086  # TORCH_SPEC holds several requirements
.venv/bin/python -m pip install --quiet $TORCH_SPEC -e ".[dev]"
echo "installed: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
