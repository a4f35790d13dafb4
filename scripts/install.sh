#!/usr/bin/env bash
# Create .venv and install fedbcs-lightning with its test tools.
#
# torch is pinned (TORCH_SPEC) so that pip never resolves an unpinned, multi-GB build.
# With a GPU, set TORCH_SPEC to the torch/torchvision build for your CUDA version. Where a
# CPU-only wheel index is reachable, TORCH_INDEX=<its URL> installs torch from it (a much
# smaller venv). A second run with nothing changed does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
TORCH_INDEX=${TORCH_INDEX:-}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.fedbcs-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $TORCH_SPEC $TORCH_INDEX"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -x .venv/bin/fedbcs ]; then
    echo "already installed: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
    exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "$TORCH_INDEX" ]; then
    # shellcheck disable=SC2086  # TORCH_SPEC holds several requirements
    .venv/bin/python -m pip install --quiet $TORCH_SPEC --index-url "$TORCH_INDEX"
fi
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet $TORCH_SPEC -e ".[dev,flower]"
echo "$wanted" > "$stamp"
echo "installed: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
