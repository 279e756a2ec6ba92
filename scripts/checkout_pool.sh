#!/usr/bin/env bash
# Checks out every repository of a pool list (data/hypernet-pool/train.tsv or heldout.tsv) at
# its screened commit, one work tree per repository: OUT/<owner+name>. Each comes from a local
# mirror when MIRRORS holds one (MIRRORS/<owner+name>/repo, as the search tool's `fetch` leaves
# it, bare or not), else from its URL. Existing work trees at the right commit are kept, so a
# rerun resumes. Prints one line per repository it could not check out and exits 1 if any.
#
#   scripts/checkout_pool.sh data/hypernet-pool/heldout.tsv runs/heldout [MIRRORS]
#   repo2lora bench --test-repos runs/heldout/* ...   # or: dataset build --repos runs/train/*
#
# Blobs a mirror leaves out (files of 4 MiB and more; never a .py file) are reported by git and
# skipped: what the pool's tasks read is there.
set -uo pipefail
tsv=${1:?usage: scripts/checkout_pool.sh POOL.tsv OUT [MIRRORS]}
out=${2:?usage: scripts/checkout_pool.sh POOL.tsv OUT [MIRRORS]}
mirrors=${3:-}
[ -f "$tsv" ] || { echo "checkout_pool: $tsv is not a file" >&2; exit 1; }
mkdir -p "$out"
failed=0
while IFS=$'\t' read -r name url _ head _; do
  [ "$name" = owner_name ] && continue
  slug=${name/\//+}
  dst=$out/$slug
  if [ "$(git -C "$dst" rev-parse HEAD 2>/dev/null)" = "$head" ]; then continue; fi
  src=$url
  for m in "$mirrors/$slug/repo/.git" "$mirrors/$slug/repo"; do
    if [ -n "$mirrors" ] && [ -d "$m" ]; then src=$m; break; fi
  done
  rm -rf "$dst.part"
  if git clone -q --no-checkout "$src" "$dst.part" 2>/dev/null &&
    git -C "$dst.part" -c advice.detachedHead=false checkout -q "$head" 2>/dev/null ||
    [ "$(git -C "$dst.part" rev-parse HEAD 2>/dev/null)" = "$head" ]; then
    rm -rf "$dst" && mv "$dst.part" "$dst"
  else
    rm -rf "$dst.part"
    echo "checkout_pool: $name: cannot check out $head from $src" >&2
    failed=1
  fi
done < "$tsv"
exit $failed
