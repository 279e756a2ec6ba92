#!/usr/bin/env bash
# Fetches the wheels scripts/train_on_device.sh installs on a GPU machine that has torch and
# transformers but no accelerate and no network: accelerate (pure Python) and psutil (its one
# dependency transformers does not bring), for CPython 3.12 on x86-64 Linux, into .device-wheels/
# (git-ignored; carry it to the machine with the working tree).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ACCELERATE=$("$PY" -c "import accelerate; print(accelerate.__version__)" 2>/dev/null || echo 1.16.0)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --implementation cp -d .device-wheels \
  "accelerate==$ACCELERATE" psutil
ls -l .device-wheels
