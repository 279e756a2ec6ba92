#!/usr/bin/env bash
# Readies this checkout for `scripts/pretrain_on_device.sh installed` on a lent GPU machine:
# copies the evaluation-reserved list into .device-data/ (the ../shared beside the checkout
# does not travel, and the corpus build refuses to run without the list), fetches the wheels
# the device lacks into .device-wheels/ (scripts/device-wheels.txt: datasketch, for the corpus
# build's near-duplicate filter), and checks that the tree a call carries stays within 64 MiB. Both
# folders are git-ignored; carry them: `carry: [".device-data", ".device-wheels"]`.
#
#   scripts/prepare_device_pretrain.sh [--reserved TSV] [--datasets TRAIN HELD_OUT]
#
# --datasets also readies the base-model ablation that the device script then runs on the new
# model: both built datasets packed without vectors (`repo2lora dataset pack`; the held-out one
# with its chunk texts) into .device-data/datasets.tar.xz, and the wheels of what the training
# and the ceiling import that the device lacks (scripts/device-wheels.txt).
set -euo pipefail
PY=${PYTHON:-python3}
reserved=../shared/eval-reserved.tsv
train=""
held=""
while [ $# -gt 0 ]; do
    case "$1" in
        --reserved) reserved=$(realpath -m "${2:?--reserved needs a path}"); shift 2 ;;
        --datasets)
            train=$(realpath -m "${2:?--datasets needs TRAIN and HELD_OUT}")
            held=$(realpath -m "${3:?--datasets needs TRAIN and HELD_OUT}")
            shift 3 ;;
        *) echo "prepare_device_pretrain: unknown option $1" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
if [ ! -f "$reserved" ]; then
    echo "prepare_device_pretrain: no evaluation-reserved list at $reserved; pass --reserved" >&2
    exit 2
fi
mkdir -p .device-data .device-wheels
install -m 0644 "$reserved" .device-data/eval-reserved.tsv
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
wheels=()
while IFS=$'\t' read -r name when; do  # scripts/device-wheels.txt: name, what needs it
    case "$name" in ''|'#'*) continue ;; esac
    if [ "$when" = corpus ] || [ -n "$train" ]; then wheels+=("$name==$(version "$name")"); fi
done < scripts/device-wheels.txt
if [ -n "$train" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m repo2lora dataset pack "$train" --out "$tmp/train" --no-texts
    "$PY" -m repo2lora dataset pack "$held" --out "$tmp/held"
    tar -cJf .device-data/datasets.tar.xz.tmp -C "$tmp" train held
    mv .device-data/datasets.tar.xz.tmp .device-data/datasets.tar.xz
fi
# the device runs CPython 3.12 on x86-64 Linux
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .device-wheels "${wheels[@]}"
# what a call carries: tracked and untracked-not-ignored files, and the two folders
bytes=$( { git ls-files -z --cached --others --exclude-standard; \
           find .device-data .device-wheels -type f -print0; } \
         | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
mib=$(( bytes / 1048576 ))
echo "prepare_device_pretrain: the reserved list, $(ls .device-wheels | wc -l) wheel(s)" \
     "$([ -f .device-data/datasets.tar.xz ] && echo "and the ablation's datasets ")ready;" \
     "a call carries about $mib MiB of its 64"
if [ "$bytes" -gt $(( 64 * 1048576 )) ]; then
    echo "prepare_device_pretrain: that is over the 64 MiB a call carries; remove untracked" \
         "files or wheels it does not need" >&2
    exit 1
fi
echo "prepare_device_pretrain: the call: command 'DEADLINE_MINUTES=9.5 bash" \
     "scripts/pretrain_on_device.sh installed 8', carry [\".device-data\", \".device-wheels\"]," \
     "timeout_s 600"
