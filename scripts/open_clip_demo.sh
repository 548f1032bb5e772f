#!/usr/bin/env bash
# The vision-language test on CLIPs trained by open_clip's own trainer, not dejavu's: split the built-in
# captioned scenes, train a small open_clip ViT on A's image-caption pairs and another on B's, audit both.
#   scripts/open_clip_demo.sh [OUT]        (default runs/open_clip_demo; about 3.5 min on 2 CPU cores)
# Needs open_clip's training extras: pip install 'open_clip_torch[training]'.
# EPOCHS (150), MODEL (vit_tiny_32: configs/open_clip/vit_tiny_32, or an open_clip model name such as ViT-B-32)
# and DEVICE (cpu; cuda on a GPU) override the defaults. A model already trained (its last checkpoint exists)
# is kept; each training's log is OUT/open_clip/<A|B>.log.
set -euo pipefail

OUT=${1:-runs/open_clip_demo}
EPOCHS=${EPOCHS:-150}
MODEL=${MODEL:-vit_tiny_32}
DEVICE=${DEVICE:-cpu}
# The interpreter dejavu runs under: open_clip_train must come from the same environment.
PY=$(dirname "$(command -v dejavu)")/python
[ -x "$PY" ] || PY=python3
SHIPPED=$("$PY" -c "from dejavu.config.shipped import shipped_folder; print(shipped_folder() / 'open_clip')")
if [ -d "$SHIPPED/$MODEL" ]; then TRAIN_MODEL="local-dir:$SHIPPED/$MODEL"; else TRAIN_MODEL=$MODEL; fi
"$PY" -c "import open_clip_train.data" 2>/dev/null || {
  echo "open_clip_demo.sh: open_clip's trainer needs its extras: pip install 'open_clip_torch[training]'" >&2; exit 2; }

dejavu split --config clip_demo --out "$OUT"
mkdir -p "$OUT/open_clip"
for M in A B; do
  CHECKPOINT="$OUT/open_clip/$M/checkpoints/epoch_$EPOCHS.pt"
  [ -f "$CHECKPOINT" ] && continue
  rm -rf "$OUT/open_clip/$M"   # open_clip_train refuses an experiment folder that exists
  # The same recipe for both models (seed included): only their data differ. --warmup counts steps (5 per
  # epoch here); --precision and --device default to a GPU's amp / cuda.
  "$PY" -m open_clip_train.main --dataset-type csv --train-data "$OUT/data/export/train_$M.tsv" \
    --model "$TRAIN_MODEL" --device "$DEVICE" --precision fp32 --batch-size 100 --epochs "$EPOCHS" --lr 2e-3 \
    --wd 0.1 --warmup 10 --workers 0 --seed 0 --logs "$OUT/open_clip" --name "$M" --save-frequency "$EPOCHS" \
    --report-to "" > "$OUT/open_clip/$M.log" 2>&1 || true
  { grep -E "Train Epoch: [0-9]+ \[[0-9]+/[0-9]+ \(100%\)\]" "$OUT/open_clip/$M.log" || true; } | sed -n "1p;\$p"
  [ -f "$CHECKPOINT" ] || { echo "open_clip_demo.sh: training $M wrote no $CHECKPOINT; see $OUT/open_clip/$M.log" >&2
                            exit 1; }
done
dejavu audit --out "$OUT" --arch "open_clip:$MODEL" \
  --target "$OUT/open_clip/A/checkpoints/epoch_$EPOCHS.pt" --reference "$OUT/open_clip/B/checkpoints/epoch_$EPOCHS.pt"
