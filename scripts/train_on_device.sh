#!/usr/bin/env bash
# Trains a Code2LoRA hypernetwork for a few minutes on this machine's GPUs for a random-init
# base model shaped like Qwen2.5-Coder-0.5B (bf16 autocast, activation checkpointing of the
# frozen base, chunk vectors encoded on the GPU), with 2 processes (DDP) when there are 2 or
# more GPUs, else 1, and writes the report (step time, tokens/s, peak memory beside the memory
# formula's estimate, whether the loss fell) to $OUT/device_training.json.
#
# Needs Python with torch, transformers, tokenizers, safetensors, numpy and accelerate; nothing
# is downloaded. Where accelerate is missing, it is installed (into .device-site/, not the
# system) from wheels in .device-wheels/ (scripts/fetch_device_wheels.sh fetches them on a
# machine with a network; carry the folder along).
#
#   OUT=runs/device scripts/train_on_device.sh                  # defaults: 0.5B shape, 3 minutes
#   SHAPE=qwen2.5-coder-1.5b MINUTES=5 scripts/train_on_device.sh --batch-size 32
#
# Environment: OUT (default runs/device), SHAPE (a reference shape or preset), MINUTES,
# PYTHON (default python3), NPROC (default: 2 with 2+ GPUs, else 1). Other arguments go to
# `python -m benchmark.device_training`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device}
SHAPE=${SHAPE:-qwen2.5-coder-0.5b}
MINUTES=${MINUTES:-3}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"

if ! "$PY" -c "import accelerate" 2>/dev/null; then
  if ! compgen -G ".device-wheels/*.whl" >/dev/null; then
    echo "train_on_device.sh: accelerate is not installed and .device-wheels/ holds no wheels;" \
      "run scripts/fetch_device_wheels.sh where there is a network and carry .device-wheels/" >&2
    exit 1
  fi
  "$PY" -m pip install --quiet --no-index --no-deps --target .device-site .device-wheels/*.whl >&2
  export PYTHONPATH="$PYTHONPATH:$PWD/.device-site"
fi

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
NPROC=${NPROC:-$(( GPUS >= 2 ? 2 : 1 ))}
ARGS=(-m benchmark.device_training --shape "$SHAPE" --minutes "$MINUTES" --out "$OUT" "$@")
echo "train_on_device.sh: $GPUS GPU(s), $NPROC process(es), shape $SHAPE, $MINUTES min" >&2
if [ "$NPROC" -gt 1 ]; then
  "$PY" -m accelerate.commands.launch --multi_gpu --num_processes "$NPROC" --num_machines 1 \
    --mixed_precision no --dynamo_backend no "${ARGS[@]}" >"$OUT/stdout.json"
else
  "$PY" "${ARGS[@]}" >"$OUT/stdout.json"
fi
cat "$OUT/device_training.json"
