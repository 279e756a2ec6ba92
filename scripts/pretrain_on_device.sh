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
#
# With .device-data/datasets.tar.xz (prepare_device_pretrain.sh --datasets TRAIN HELD_OUT packs
# it; DATASETS names another), the base-model ablation runs on the new model right after, on
# the GPU: bits per byte beside the shipped default's on the held-out repositories' source
# (benchmark.bpb_compare --dataset), a shared LoRA on the training pool, then
# benchmark.finetune_ceiling on the held-out repositories, into $OUT/ablation.json.
# DEADLINE_MINUTES then keeps ABLATION_MINUTES (2.5) for it; LORA_STEPS, CEILING_REPOS and
# CEILING_STEPS size it (400, 12, 15,45).
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
fi
# `untar ARCHIVE DIR STRIP`: Python's tarfile and lzma, so the device needs no xz program
untar() {
    "$PY" - "$@" <<'EOF'
import sys, tarfile
from pathlib import Path
archive, dest, strip = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
dest.mkdir(parents=True, exist_ok=True)
with tarfile.open(archive) as tf:
    members = []
    for m in tf.getmembers():
        parts = Path(m.name).parts[strip:]
        if parts:
            m.name = str(Path(*parts))
            members.append(m)
    tf.extractall(dest, members=members, filter="data")
EOF
}
wheels=${WHEELS:-.device-wheels}  # what the device lacks (scripts/device-wheels.txt)
if compgen -G "$wheels/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$work/site" "$wheels"/*.whl
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "$source_arg" = installed ]; then
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
    untar "$source_arg" "$work/corpus" 1
fi
datasets=${DATASETS:-.device-data/datasets.tar.xz}
ablate=0
[ -f "$datasets" ] && ablate=1
reserve=$([ "$ablate" = 1 ] && echo "${ABLATION_MINUTES:-2.5}" || echo 0)
if [ -n "${DEADLINE_MINUTES:-}" ]; then
    minutes=$("$PY" -c "import sys; m, d, used, r = map(float, sys.argv[1:]); \
left = d - used / 60 - 1 - r; print(round(min(m, left), 2) if left > 0.05 else 0)" \
        "$minutes" "$DEADLINE_MINUTES" "$(( $(date +%s) - start ))" "$reserve")
    if [ "$minutes" = 0 ]; then
        echo "pretrain_on_device: no time left to train within $DEADLINE_MINUTES minutes" >&2
        exit 3
    fi
    echo "pretrain_on_device: training for $minutes minutes"
fi
# The files back (at most 8): the model in at most 7 (bf16 shards of 16 MiB, card, curve, one
# tar), and result.json, or with the ablation ablation.json, which then holds the pretraining
# result too. `report KEY=FILE...` adds sections to ablation.json as each step ends, so a call
# cut at its limit still brings back what finished.
report() {
    "$PY" - "$OUT/ablation.json" "$@" <<'EOF'
import json, os, sys
out = sys.argv[1]
doc = json.load(open(out)) if os.path.exists(out) else {}
for arg in sys.argv[2:]:
    key, path = arg.split("=", 1)
    doc[key] = json.load(open(path))
json.dump(doc, open(out + ".tmp", "w"), indent=1)
os.replace(out + ".tmp", out)
EOF
}
result="$OUT/result.json"
[ "$ablate" = 1 ] && result="$work/result.json"
"$PY" -m repo2lora pretrain --corpus "$work/corpus" --out "$work/run" --minutes "$minutes" \
    --budget-minutes "$minutes" --finish-at-stop --max-params "${MAX_PARAMS:-28000000}" --json "$@" > "$result"
"$PY" -m repo2lora.pretrain.export --run "$work/run" --out "$OUT" --max-files 7 > /dev/null
if [ "$ablate" = 1 ]; then
    # the base-model ablation on the new model, on this machine's GPU (scripts/base_ablation.sh
    # does the same here on the CPU): bits per byte beside the shipped base's, a shared LoRA on
    # the training pool's tasks, then the fine-tune ceiling on the held-out repositories (base,
    # shared LoRA, own source against another's). The datasets are packed copies: tasks, names
    # and texts, no vectors, no git.
    report pretrain="$result"
    mkdir -p "$work/ds"
    untar "$datasets" "$work/ds" 0
    export GIT_PYTHON_REFRESH=quiet  # GitPython is imported, never run: there is no git here
    echo "pretrain_on_device: ablation: bits per byte on the held-out repositories' source"
    "$PY" -m benchmark.bpb_compare --dataset "$work/ds/held" default "$work/run/model" \
        > "$work/bpb.json"
    report bits_per_byte="$work/bpb.json"
    "$PY" - "$work/bpb.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for m in d["models"]:
    print(f"  {m['model']}: {m['bits_per_byte']} bits per byte")
print(f"  xz -9e: {d['xz_bits_per_byte']}; left out: {d['left_out']}")
EOF
    echo "pretrain_on_device: ablation: shared LoRA, then the fine-tune ceiling"
    "$PY" -m repo2lora train --generator shared-lora --dataset "$work/ds/train" \
        --model "$work/run/model" --steps "${LORA_STEPS:-400}" --batch-size 16 --lr 3e-3 \
        --target-end on --eval-every 0 --out "$work/lora" --json > "$work/lora.json"
    report shared_lora="$work/lora.json"
    "$PY" -m benchmark.finetune_ceiling --lora "$work/lora" --model "$work/run/model" \
        --dataset "$work/ds/held" --replay "$work/ds/train" --max-repos "${CEILING_REPOS:-12}" \
        --steps "${CEILING_STEPS:-15,45}" --out "$work/ceiling.json" > /dev/null
    report ceiling="$work/ceiling.json"
    "$PY" - "$work/ceiling.json" <<'EOF'
import json, sys
for name, v in json.load(open(sys.argv[1]))["variants"].items():
    a, n = v["all"], v["names"]
    print(f"  {name:10s} EM {a['strict_em_pct']:5.1f}  NLL {a['target_nll']:.3f}  "
          f"name tasks EM {n['strict_em_pct']:5.1f}")
EOF
fi
echo "pretrain_on_device: done in $(( $(date +%s) - start ))s; files in $OUT:"
ls -la "$OUT"
