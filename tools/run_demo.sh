#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone:
#   set up the environment (first run on a new machine: ~20 min, mostly the mmcv build),
#   generate the synthetic domain-generalisation data (GTAV-format source; Cityscapes-,
#   BDD100K- and Mapillary-format targets in unseen styles), train a small MFuser on the CPU,
#   evaluate it on the three unseen domains (per-domain mIoU table), paint overlays.
#
#   bash tools/run_demo.sh                 # everything, ~10 min after setup on 2 CPU cores
#   WORK_DIR=/tmp/demo bash tools/run_demo.sh
#   bash tools/run_demo.sh --cfg-options train_cfg.max_iters=200   # extra args go to train.py
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MFUSER_VENV:-$HOME/.venvs/mfuser}"
CONFIG="configs/mfuser_tiny_synthetic.py"
WORK_DIR="${WORK_DIR:-work_dirs/demo}"
DATA="data/synthetic"
say() { printf '\033[1;32m[demo]\033[0m %s\n' "$*"; }
t0=$(date +%s)

bash "$REPO/tools/setup_env.sh"
cd "$REPO"
PY="$VENV/bin/python"

if [ -f "$DATA/.complete" ]; then
  say "synthetic data already in $DATA (delete it to regenerate)"
else
  say "1/4 generating the synthetic source and target domains into $DATA"
  rm -rf "$DATA"
  "$PY" tools/make_synthetic_data.py --out "$DATA" --convert
  touch "$DATA/.complete"
fi

if [ -f "$WORK_DIR/last_checkpoint" ]; then
  KEEP="$WORK_DIR.prev-$(date +%Y%m%d_%H%M%S)"
  say "moving the previous demo run out of the way: $WORK_DIR -> $KEEP"
  mv "$WORK_DIR" "$KEEP"
fi

say "2/4 training $CONFIG on the CPU (progress every 20 iterations; validation on the unseen domains every 200)"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
CKPT="$WORK_DIR/$(cat "$WORK_DIR/last_checkpoint" | xargs basename)"
TRAIN_RUN=$(ls -td "$WORK_DIR"/20*/ | head -n1)

say "3/4 testing $CKPT on the unseen target domains"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR" 2>&1 | tee "$WORK_DIR/test_output.txt"
TEST_RUN=$(ls -td "$WORK_DIR"/20*/ | head -n1)

say "4/4 painting overlays of target-domain images"
"$PY" tools/infer.py "$CONFIG" "$CKPT" \
  "$DATA/cityscapes/leftImg8bit/val" "$DATA/bdd100k/images/10k/val" \
  "$DATA/mapillary/validation/images" --limit 12 --out-dir "$WORK_DIR/overlays"

say "done in $(( $(date +%s) - t0 )) s. mIoU on the unseen domains (trained on the GTAV-format source only):"
"$PY" - "${TEST_RUN}dg_results.json" <<'PYEOF'
import json
import sys

res = json.load(open(sys.argv[1]))
rows = [(name, res['metrics'][f'{name}/mIoU'], res['metrics'][f'{name}/mAcc'],
         res['metrics'][f'{name}/aAcc']) for name in res['domains']]
rows.append(('mean', res['mean']['mIoU'], res['mean']['mAcc'], res['mean']['aAcc']))
print(f"  {'domain':<12}{'mIoU':>8}{'mAcc':>8}{'aAcc':>8}")
for name, miou, macc, aacc in rows:
    print(f'  {name:<12}{miou:>8.2f}{macc:>8.2f}{aacc:>8.2f}')
PYEOF
say "outputs:"
echo "  checkpoints        : $WORK_DIR/iter_*.pth (last: $CKPT)"
echo "  training log       : $(ls "$TRAIN_RUN"*.log | head -n1)"
echo "  training curves    : ${TRAIN_RUN}training_curves.png"
echo "  test log / results : $(ls "$TEST_RUN"*.log | head -n1), ${TEST_RUN}dg_results.json"
echo "  test output        : $WORK_DIR/test_output.txt"
echo "  overlays           : $WORK_DIR/overlays/"
