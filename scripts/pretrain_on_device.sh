#!/usr/bin/env bash
# Pretrains the default code LM inside ONE device call (a lent GPU machine: Python with torch,
# transformers, tokenizers, safetensors and numpy; no network) and leaves the model in $OUT as
# at most 8 files (bf16 shards of <= 16 MiB, card, curve, one tar of the small files).
#
#   scripts/pretrain_on_device.sh CORPUS.tar.xz [MINUTES] [extra `repo2lora pretrain` options]
#
# CORPUS.tar.xz holds one corpus directory (`repo2lora corpus build`, or a subset made with
# `repo2lora corpus subset`), packed with `tar -cJf`. MINUTES (default 7) is the
# training wall clock; the model is sized for that compute (measured on the device) and capped
# so that it comes back within 8 files. A CPU test runs this script with a tiny config.
set -euo pipefail
cd "$(dirname "$0")/.."
archive=${1:?usage: scripts/pretrain_on_device.sh CORPUS.tar.xz [MINUTES] [options]}
minutes=${2:-7}
shift $(( $# >= 2 ? 2 : 1 ))
OUT=${OUT:-$(mktemp -d)}
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
tar -xJf "$archive" -C "$work/corpus" --strip-components=1
start=$(date +%s)
"$PY" -m repo2lora pretrain --corpus "$work/corpus" --out "$work/run" --minutes "$minutes" \
    --budget-minutes "$minutes" --finish-at-stop --max-params "${MAX_PARAMS:-28000000}" --json "$@" > "$OUT/result.json"
"$PY" -m repo2lora.pretrain.export --run "$work/run" --out "$OUT" --max-files 7 > /dev/null
echo "pretrain_on_device: done in $(( $(date +%s) - start ))s; files in $OUT:"
ls -la "$OUT"
