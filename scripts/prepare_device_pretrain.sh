#!/usr/bin/env bash
# Readies this checkout for `scripts/pretrain_on_device.sh installed` on a lent GPU machine:
# copies the evaluation-reserved list into .device-data/ (the ../shared beside the checkout
# does not travel, and the corpus build refuses to run without the list), fetches the wheels
# the device lacks into .device-wheels/ (datasketch, pure Python, for the corpus build's
# near-duplicate filter), and checks that the tree a call carries stays within 64 MiB. Both
# folders are git-ignored; carry them: `carry: [".device-data", ".device-wheels"]`.
#
#   scripts/prepare_device_pretrain.sh [RESERVED_TSV]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
reserved=${1:-../shared/eval-reserved.tsv}
if [ ! -f "$reserved" ]; then
    echo "prepare_device_pretrain: no evaluation-reserved list at $reserved; pass its path" >&2
    exit 2
fi
mkdir -p .device-data .device-wheels
install -m 0644 "$reserved" .device-data/eval-reserved.tsv
DATASKETCH=$("$PY" -c "import importlib.metadata as m; print(m.version('datasketch'))" 2>/dev/null || echo 2.0.0)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d .device-wheels "datasketch==$DATASKETCH"
# what a call carries: tracked and untracked-not-ignored files, and the two folders
bytes=$( { git ls-files -z --cached --others --exclude-standard; \
           find .device-data .device-wheels -type f -print0; } \
         | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
mib=$(( bytes / 1048576 ))
echo "prepare_device_pretrain: the reserved list and $(ls .device-wheels | wc -l) wheel(s) ready;" \
     "a call carries about $mib MiB of its 64"
if [ "$bytes" -gt $(( 64 * 1048576 )) ]; then
    echo "prepare_device_pretrain: that is over the 64 MiB a call carries; remove untracked" \
         "files or wheels it does not need" >&2
    exit 1
fi
