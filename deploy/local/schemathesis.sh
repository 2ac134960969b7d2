#!/usr/bin/env bash
# Schemathesis (PyPI) for the API contract test, pinned, in a virtualenv
# under .local/schemathesis (idempotent), the way chdb.sh installs chDB.
#
#   deploy/local/schemathesis.sh install   create the virtualenv (every package pinned in
#                                          deploy/local/schemathesis/requirements.txt)
#   deploy/local/schemathesis.sh bin       print the schemathesis executable (PARTNERS_TEST_SCHEMATHESIS)
#   deploy/local/schemathesis.sh version
#
# Environment: SCHEMATHESIS_DIR (default <repo>/.local/schemathesis).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REQ="$ROOT/deploy/local/schemathesis/requirements.txt"
DIR="${SCHEMATHESIS_DIR:-$ROOT/.local/schemathesis}"

log() { printf '[schemathesis] %s\n' "$*" >&2; }
die() { printf '[schemathesis] ERROR: %s\n' "$*" >&2; exit 1; }

python_bin() {
  local p
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

cmd_install() {
  mkdir -p "$(dirname "$DIR")"
  exec 8>"$(dirname "$DIR")/.schemathesis.lock"
  flock 8
  if [ -f "$DIR/.installed" ] && cmp -s "$DIR/.installed" "$REQ" && [ -x "$DIR/bin/schemathesis" ]; then return 0; fi
  local py; py="$(python_bin)" || {
    log "no python3 with venv; installing python3-venv with apt"
    if [ "$(id -u)" -eq 0 ]; then apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null
    else sudo apt-get update -q >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null; fi
    py="$(python_bin)" || die "python3 with venv not available"
  }
  local t0=$SECONDS
  log "installing into ${DIR#"$ROOT"/} (pip, $(basename "$REQ"))"
  rm -rf "$DIR"
  "$py" -m venv "$DIR"
  "$DIR/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$REQ" >"$DIR.pip.log" 2>&1 \
    || { tail -n 20 "$DIR.pip.log" >&2; die "pip install failed (see ${DIR#"$ROOT"/}.pip.log)"; }
  "$DIR/bin/schemathesis" --version >/dev/null || die "installed but does not run"
  cp "$REQ" "$DIR/.installed"
  log "ready in $((SECONDS - t0))s: $("$DIR/bin/schemathesis" --version)"
}

case "${1:-}" in
  install) cmd_install ;;
  bin) [ -x "$DIR/bin/schemathesis" ] || die "not installed: run $0 install"; echo "$DIR/bin/schemathesis" ;;
  version) "$DIR/bin/schemathesis" --version ;;
  *) echo "usage: $0 install|bin|version" >&2; exit 2 ;;
esac
