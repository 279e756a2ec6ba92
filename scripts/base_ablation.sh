#!/usr/bin/env bash
# Measures what a candidate base model does for the adapters (issues #15/#16: "which base
# model"), on the CPU, with the recipe the README's base-model ablation used for the shipped
# base and its step-1,000 checkpoint, so the rows compare:
#   1. a shared LoRA trained on the training pool's built dataset (400 steps of 16 at 3e-3,
#      target end on; it reads no chunk vectors, so the dataset need not be rebuilt);
#   2. `bench` on the held-out repositories: base and that shared LoRA, static track, at most
#      16 tasks each, strict EM and NLL, overall and on the name subsets;
#   3. the fine-tune ceiling: the shared LoRA trained on each of 12 held-out repositories' own
#      source against another's, 15 and 45 steps (does the repository's own text help at all?).
#
#   scripts/base_ablation.sh MODEL_DIR OUT TRAIN_DATASET HELD_OUT_DATASET HELD_OUT_REPO...
#   (STEPS, MAX_REPOS and CEILING_STEPS change the three sizes: 400, 12, 15,45; RANK and
#   TARGET_MODULES the LoRA's shape, 8 and attention: the README's modules-and-rank ablation
#   used all-linear at 8 and 32, with an OUT of its own per shape)
#
# MODEL_DIR: a model directory (`python -m repo2lora.pretrain.export --unpack` rebuilds one from
# what pretrain_on_device.sh returns). TRAIN_DATASET / HELD_OUT_DATASET: `repo2lora dataset
# build` outputs for the pool's train.tsv and heldout.tsv repositories; HELD_OUT_REPO...: the
# held-out work trees (scripts/checkout_pool.sh). Resumable: a finished step is skipped. About
# 30 min on 2 cores for the shipped 3.2M-parameter base; a larger base costs about in proportion.
set -euo pipefail
usage="usage: scripts/base_ablation.sh MODEL_DIR OUT TRAIN_DATASET HELD_OUT_DATASET HELD_OUT_REPO..."
if [ $# -lt 5 ]; then echo "base_ablation: $usage" >&2; exit 2; fi
# the paths as given, made absolute before the script moves to the checkout
model=$(realpath -m "$1"); out=$(realpath -m "$2"); train=$(realpath -m "$3")
held=$(realpath -m "$4")
shift 4
repos=()
for r in "$@"; do repos+=("$(realpath -m "$r")"); done
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STEPS=${STEPS:-400}
MAX_REPOS=${MAX_REPOS:-12}
CEILING_STEPS=${CEILING_STEPS:-15,45}
RANK=${RANK:-8}
TARGET_MODULES=${TARGET_MODULES:-attention}
mkdir -p "$out"
if [ ! -f "$out/shared-lora/adapter_config.json" ]; then
    echo "base_ablation: shared LoRA ($STEPS steps)"
    "$PY" -m repo2lora train --generator shared-lora --dataset "$train" --model "$model" \
        --steps "$STEPS" --batch-size 16 --lr 3e-3 --target-end on --eval-every 0 --threads 1 \
        --rank "$RANK" --target-modules "$TARGET_MODULES" \
        --out "$out/shared-lora" --json > "$out/shared-lora.json"
fi
if [ ! -f "$out/bench/bench.json" ]; then
    echo "base_ablation: bench (base, shared LoRA)"
    "$PY" -m repo2lora bench --generator-dir "$out/shared-lora" --methods base --model "$model" \
        --test-repos "${repos[@]}" --track static --max-tasks 16 --no-with-tests --threads 1 \
        --out "$out/bench" > "$out/bench.log" 2>&1
fi
if [ ! -f "$out/ceiling.json" ]; then
    echo "base_ablation: fine-tune ceiling ($MAX_REPOS repositories, steps $CEILING_STEPS)"
    "$PY" -m benchmark.finetune_ceiling --lora "$out/shared-lora" --model "$model" \
        --dataset "$held" --replay "$train" --max-repos "$MAX_REPOS" --steps "$CEILING_STEPS" --threads 1 \
        --out "$out/ceiling.json.tmp" > /dev/null
    mv "$out/ceiling.json.tmp" "$out/ceiling.json"
fi
echo "base_ablation: done; $out/bench/bench.md and $out/ceiling.json"
