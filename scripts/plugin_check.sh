#!/usr/bin/env bash
# A plugin installed the way a user installs it: fedbcs-lightning and examples/plugin each
# built as a wheel and installed (not editable) into a fresh environment, then trained
# with and tested from a folder outside the repository.
#
# Uses .venv's pip to build; TORCH_SPEC pins torch as in scripts/install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
work=$(mktemp -d)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline

.venv/bin/python -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$REPO" "$REPO/examples/plugin"
python3 -m venv "$work/env"
"$work/env/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086  # TORCH_SPEC holds several requirements
"$work/env/bin/python" -m pip install --quiet $TORCH_SPEC "$work"/dist/*.whl pytest
cp -r "$REPO/examples/plugin/tests" "$work/tests"
cd "$work"
listed="$("$work/env/bin/fedbcs" methods) $("$work/env/bin/fedbcs" backbones)"
for name in fedavgm tiny-unet; do
    grep -q "^$name " <<<"$listed" || { echo "$name is not listed:"; echo "$listed"; exit 1; }
done
"$work/env/bin/fedbcs" fit --method fedavgm --set fedavgm.momentum=0.5 --set fedavgm.clip=5 \
    --set model.backbone=tiny-unet --set model.options.depth=3 --image-size 32 --rounds 2 \
    --clients 2 --set data.synthetic.images_per_site=8 --output "$work/run"
"$work/env/bin/fedbcs" fit --resume "$work/run" --rounds 3
"$work/env/bin/fedbcs" evaluate "$work/run/checkpoints/last.pt"
"$work/env/bin/python" -m pytest -q -p no:cacheprovider "$work/tests"
echo "plugin check passed"
