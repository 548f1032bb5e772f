#!/usr/bin/env bash
# The device check: one call on a GPU machine (about 6-8 minutes on one H200), nothing downloaded.
#   1. the training-step benchmark (bare backbone step vs the full step with on-device augmentation),
#   2. every method trained a few hundred steps on the built-in scenes at 64 px with ResNet-18 (bf16),
#      then the whole attack (torch kNN on the GPU), printing throughput and the verdict.
# Needs python3 with torch and torchvision (the machine's own are used: nothing is pip-installed from an
# index). Packages the machine lacks (faiss-cpu, defusedxml, submitit) travel as wheels in .whl/ when present.
#   bash scripts/gpu_check.sh                 # on the GPU machine; results under $OUT (default /tmp/gpu_check)
#   QUICK=1 bash scripts/gpu_check.sh         # a seconds-long rehearsal of the same commands on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

if [ "${QUICK:-0}" = 1 ]; then
  BENCH=(--backbone convnet --input-size 32 --batch 32 --steps 1 --repeats 1 --warmup 1)
  RUN=(data.images_per_class=60 data.image_size=32 data.input_size=32 split.a_per_class=10 split.b_per_class=10
       split.x_per_class=20 split.t_per_class=10 train.epochs=2 train.batch_size=50 train.backbone=convnet
       train.widths=[8,16] train.precision=fp32 crop.min_side_px=8 attack.k=10 metrics.bootstrap=50)
else
  BENCH=(--backbone resnet18 --input-size 64 --batch 256 --precision bf16 --steps 10 --repeats 5)
  # 1,000 training images, global batch 250: 4 steps per epoch, 75 epochs = 300 steps per model.
  RUN=(data.images_per_class=400 data.image_size=64 data.input_size=64 split.a_per_class=100
       split.b_per_class=100 split.x_per_class=150 split.t_per_class=50 train.epochs=${EPOCHS:-75}
       train.batch_size=250 train.warmup_epochs=5 train.backbone=resnet18 train.projector=2048-2048-2048
       train.precision=bf16 attack.k=50)
fi

echo "== device"
$PY - <<'PY' | tee "$OUT/device.txt"
import platform, torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (CPU)"
print(f"python {platform.python_version()}, torch {torch.__version__}, device: {name}")
PY

echo "== benchmark: benchmarks/train_step.py ${BENCH[*]}"
$PY benchmarks/train_step.py "${BENCH[@]}" | tee "$OUT/train_step.md"

echo "== every method, ResNet-18 at 64 px, then the attack"
echo "| method | train A img/s | train B img/s | run s | gap (points) | p | control gap |" | tee "$OUT/methods.md"
echo "|---|---|---|---|---|---|---|" | tee -a "$OUT/methods.md"
for method in vicreg simclr barlow_twins byol dino supervised; do
  start=$(date +%s)
  # Exit 0, 3 (no verdict) and 4 (inconclusive) are finished runs; anything else failed.
  rc=0
  $PY -m dejavu.cli run --out "$OUT/runs/$method" "${RUN[@]}" train.method=$method attack.backend=torch \
      > "$OUT/$method.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ] && [ "$rc" -ne 4 ]; then
    echo "| $method | failed (exit $rc): see $OUT/$method.log |" | tee -a "$OUT/methods.md"; tail -5 "$OUT/$method.log"; continue
  fi
  seconds=$(( $(date +%s) - start ))
  $PY - "$OUT/runs/$method" "$method" "$seconds" <<'PY' | tee -a "$OUT/methods.md"
import json, sys
from pathlib import Path
run, method, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rate = [json.loads((run / "models" / m / "history.json").read_text())["images_per_second_this_session"] for m in "AB"]
metrics = json.loads((run / "metrics.json").read_text())
control = metrics["control"]
print(f"| {method} | {rate[0]:.0f} | {rate[1]:.0f} | {seconds} | {100 * metrics['gap']:+.1f} | "
      f"{metrics['mcnemar_p']:.2g} | {100 * control['gap']:+.1f} |")
PY
done
