#!/usr/bin/env bash
# The vision-language test on CLIPs trained by open_clip's own trainer, not dejavu's: split the built-in
# captioned scenes, train a small open_clip ViT on A's image-caption pairs and another on B's, audit both.
#   scripts/open_clip_demo.sh [OUT]        (default runs/open_clip_demo; about 7 min on 2 CPU cores)
# Needs open_clip's training extras: pip install 'open_clip_torch[training]'.
# EPOCHS (150), MODEL (vit_tiny_32: configs/open_clip/vit_tiny_32, or any open_clip model name) and DEVICE
# (cpu; cuda on a GPU) override the defaults. A model already trained (its last checkpoint exists) is kept.
set -euo pipefail

OUT=${1:-runs/open_clip_demo}
EPOCHS=${EPOCHS:-150}
MODEL=${MODEL:-vit_tiny_32}
DEVICE=${DEVICE:-cpu}
SHIPPED=$(python -c "from dejavu.config.shipped import shipped_folder; print(shipped_folder() / 'open_clip')")
if [ -d "$SHIPPED/$MODEL" ]; then TRAIN_MODEL="local-dir:$SHIPPED/$MODEL"; else TRAIN_MODEL=$MODEL; fi
python -c "import open_clip_train.data" 2>/dev/null || {
  echo "open_clip_demo.sh: open_clip's trainer needs its extras: pip install 'open_clip_torch[training]'" >&2; exit 2; }

dejavu split --config clip_demo --out "$OUT"
for M in A B; do
  CHECKPOINT="$OUT/open_clip/$M/checkpoints/epoch_$EPOCHS.pt"
  [ -f "$CHECKPOINT" ] && continue
  rm -rf "$OUT/open_clip/$M"   # open_clip_train refuses an experiment folder that exists
  # The same recipe for both models (seed included): only their data differ.
  python -m open_clip_train.main --dataset-type csv --train-data "$OUT/data/export/train_$M.tsv" \
    --model "$TRAIN_MODEL" --device "$DEVICE" --precision fp32 --batch-size 100 --epochs "$EPOCHS" --lr 2e-3 \
    --wd 0.1 --warmup 10 --workers 0 --seed 0 --logs "$OUT/open_clip" --name "$M" --save-frequency "$EPOCHS" \
    --report-to "" 2>&1 | grep -E "Train Epoch: [0-9]+ \[[0-9]+/[0-9]+ \(100%\)\]" | sed -n "1p;\$p"
done
dejavu audit --out "$OUT" --arch "open_clip:$MODEL" \
  --target "$OUT/open_clip/A/checkpoints/epoch_$EPOCHS.pt" --reference "$OUT/open_clip/B/checkpoints/epoch_$EPOCHS.pt"
