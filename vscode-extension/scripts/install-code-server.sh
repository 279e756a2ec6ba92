#!/usr/bin/env bash
# Installs what the real VS Code end-to-end test needs, once, into a cache folder:
# code-server (VS Code 1.100.3 in the browser, from the npm registry) and Debian's Chromium.
# Nothing is downloaded from outside the npm registry and the Debian mirrors.
#   usage: scripts/install-code-server.sh [DIR]   (default: $REPO2LORA_VSCODE_E2E_DIR or .vscode-e2e)
set -euo pipefail
cd "$(dirname "$0")/.."
CODE_SERVER_VERSION=4.100.3 # the last release that runs on Node 20
RG_CACHE=vscode-ripgrep-cache-1.15.11
RG_ASSET=ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz
DIR=$(realpath -m "${1:-${REPO2LORA_VSCODE_E2E_DIR:-.vscode-e2e}}")
BIN="$DIR/cs/node_modules/.bin/code-server"
# --config everywhere: without it code-server writes a default config into the home directory
version() { [ -x "$BIN" ] && printf 'auth: none\n' >"$DIR/config.yaml" && "$BIN" --config "$DIR/config.yaml" --version 2>/dev/null | head -1; }

if [ -x /usr/bin/chromium ] && version | grep -q "^$CODE_SERVER_VERSION "; then
  echo "code-server $CODE_SERVER_VERSION and chromium already installed in $DIR"
  exit 0
fi

if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/rg ] || ! [ -e /usr/include/krb5.h ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-code-server: run as root or install chromium ripgrep libkrb5-dev with apt-get" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium ripgrep libkrb5-dev >/dev/null
fi

mkdir -p "$DIR/cs" "$DIR/tmp/$RG_CACHE" "$DIR/rgpkg"
# @vscode/ripgrep downloads its binary from GitHub at install time; hand it Debian's rg instead,
# packed under the name it looks for in its cache
cp /usr/bin/rg "$DIR/rgpkg/rg"
tar czf "$DIR/tmp/$RG_CACHE/$RG_ASSET" -C "$DIR/rgpkg" rg
cd "$DIR/cs"
[ -f package.json ] || echo '{"name": "repo2lora-code-server", "private": true}' > package.json
# root needs unsafe_perm for code-server's postinstall; node-pty runs `npx node-gyp` (yes=true)
TMPDIR="$DIR/tmp" npm_config_yes=true npm_config_unsafe_perm=true npm_config_ignore_scripts=false \
  npm install --no-audit --no-fund --no-save "code-server@$CODE_SERVER_VERSION" --foreground-scripts >"$DIR/install.log" 2>&1 ||
  { tail -40 "$DIR/install.log" >&2; echo "install-code-server: npm install code-server failed; log: $DIR/install.log" >&2; exit 1; }
version
