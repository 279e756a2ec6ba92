#!/usr/bin/env bash
# Pretrains the default code LM inside ONE device call (a lent GPU machine: Python with torch,
# transformers, tokenizers, safetensors and numpy; no network) and leaves the model in $OUT as
# at most 8 files (bf16 shards of <= 16 MiB, card, curve, one tar of the small files).
#
#   scripts/pretrain_on_device.sh CORPUS.tar.xz [MINUTES] [extra `repo2lora pretrain` options]
#   scripts/pretrain_on_device.sh installed [MINUTES] [extra `repo2lora pretrain` options]
#
# CORPUS.tar.xz holds one corpus directory (`repo2lora corpus build`, or a subset made with
# `repo2lora corpus subset`), packed with `tar -cJf`. It travels with the working tree, which
# leaves it little room: the tracked tree alone is about 61 of the 64 MiB a call carries.
#
# `installed` builds the corpus on the device instead, from its own standard library and
# installed packages (`repo2lora corpus build --no-pypi`, one worker per core): several hundred
# MB of Python that need not travel. Run scripts/prepare_device_pretrain.sh here first: it puts
# the evaluation-reserved list in .device-data/ (the ../shared beside the checkout does not
# travel; without the list the build refuses to run) and the wheels the device lacks in
# .device-wheels/; carry both (`carry: [".device-data", ".device-wheels"]`). CORPUS_OPTIONS
# adds `corpus build` options (a CPU test keeps it small with --installed-only).
#
# MINUTES (default 7) is the training wall clock; the model is sized for that compute (measured
# on the device) and capped so that it comes back within 8 files. With DEADLINE_MINUTES set,
# training gets at most what is left of that many minutes from the script's start (less one
# for the final evaluation and export), so a slow corpus build cannot push the call past its
# limit. The corpus's manifest and file hashes travel back inside model-files.tar.
# A CPU test runs this script, both ways, with a tiny config.
set -euo pipefail
cd "$(dirname "$0")/.."
source_arg=${1:?usage: scripts/pretrain_on_device.sh CORPUS.tar.xz|installed [MINUTES] [options]}
minutes=${2:-7}
shift $(( $# >= 2 ? 2 : 1 ))
OUT=${OUT:-$(mktemp -d)}
PY=${PYTHON:-python3}
start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$source_arg" = installed ]; then
    reserved=${RESERVED:-.device-data/eval-reserved.tsv}
    if [ ! -f "$reserved" ]; then
        echo "pretrain_on_device: no evaluation-reserved list at $reserved; run" \
             "scripts/prepare_device_pretrain.sh here and carry .device-data" >&2
        exit 2
    fi
    wheels=${WHEELS:-.device-wheels}
    if compgen -G "$wheels/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$work/site" "$wheels"/*.whl
        export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    # shellcheck disable=SC2086
    "$PY" -m repo2lora corpus build --out "$work/corpus" --no-pypi --reserved "$reserved" \
        --workers "$(nproc)" --json ${CORPUS_OPTIONS:-} > "$work/corpus-summary.json"
    "$PY" - "$work/corpus-summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"pretrain_on_device: corpus of {s['distributions']} distributions in {s['seconds']}s: "
      f"train {s['files']['train']} files {s['bytes']['train'] / 1e6:.0f} MB, held out "
      f"{s['files']['heldout']} files {s['bytes']['heldout'] / 1e6:.0f} MB; refused "
      f"{', '.join(s['refused_reserved']) or 'none'}")
EOF
else
    mkdir -p "$work/corpus"
    tar -xJf "$source_arg" -C "$work/corpus" --strip-components=1
fi
if [ -n "${DEADLINE_MINUTES:-}" ]; then
    minutes=$("$PY" -c "import sys; m, d, used = map(float, sys.argv[1:]); \
left = d - used / 60 - 1; print(round(min(m, left), 2) if left > 0.05 else 0)" \
        "$minutes" "$DEADLINE_MINUTES" "$(( $(date +%s) - start ))")
    if [ "$minutes" = 0 ]; then
        echo "pretrain_on_device: no time left to train within $DEADLINE_MINUTES minutes" >&2
        exit 3
    fi
    echo "pretrain_on_device: training for $minutes minutes"
fi
"$PY" -m repo2lora pretrain --corpus "$work/corpus" --out "$work/run" --minutes "$minutes" \
    --budget-minutes "$minutes" --finish-at-stop --max-params "${MAX_PARAMS:-28000000}" --json "$@" > "$OUT/result.json"
"$PY" -m repo2lora.pretrain.export --run "$work/run" --out "$OUT" --max-files 7 > /dev/null
echo "pretrain_on_device: done in $(( $(date +%s) - start ))s; files in $OUT:"
ls -la "$OUT"
