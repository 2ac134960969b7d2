#!/usr/bin/env bash
# Current ClickHouse engines for the SQL conformance suite, through chDB
# (PyPI: ClickHouse embedded in a Python process; no server to run).
#
#   deploy/local/chdb.sh install     create a virtualenv per engine under .local/chdb/ (idempotent)
#   deploy/local/chdb.sh pythons     print the engines' python paths, ':'-separated (PARTNERS_TEST_CHDB)
#   deploy/local/chdb.sh versions    print each engine's ClickHouse version
#
# Engines (pinned, every package of each virtualenv in deploy/local/chdb/requirements-<engine>.txt):
#   26.9  chdb 4.4.0 + chdb-core 26.9.0   ClickHouse 26.9.2 (current)
#   24.8  chdb 2.1.1                      ClickHouse 24.8.4 (the LTS deploy/compose pins)
#
# Environment:
#   CHDB_ENGINES   which engines (default "26.9 24.8")
#   CHDB_DIR       where the virtualenvs live (default <repo>/.local/chdb)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/deploy/local/chdb"
DIR="${CHDB_DIR:-$ROOT/.local/chdb}"
ENGINES="${CHDB_ENGINES:-26.9 24.8}"

log() { printf '[chdb] %s\n' "$*" >&2; }
die() { printf '[chdb] ERROR: %s\n' "$*" >&2; exit 1; }

python_bin() {
  local p
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

install_engine() {
  local engine="$1" req="$HERE/requirements-$1.txt" venv="$DIR/$1"
  [ -f "$req" ] || die "unknown engine $engine (no $req)"
  local marker="$venv/.installed"
  if [ -f "$marker" ] && cmp -s "$marker" "$req"; then return 0; fi
  local py; py="$(python_bin)" || {
    log "no python3 with venv; installing python3-venv with apt"
    if [ "$(id -u)" -eq 0 ]; then apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null
    else sudo apt-get update -q >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null; fi
    py="$(python_bin)" || die "python3 with venv not available"
  }
  local t0=$SECONDS
  log "installing engine $engine into ${venv#"$ROOT"/} (pip, $(basename "$req"))"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$req" >"$DIR/pip-$engine.log" 2>&1 \
    || { tail -n 20 "$DIR/pip-$engine.log" >&2; die "pip install of engine $engine failed (see ${DIR#"$ROOT"/}/pip-$engine.log)"; }
  "$venv/bin/python" -c 'import chdb; chdb.query("SELECT 1")' >/dev/null || die "engine $engine installed but does not run"
  cp "$req" "$marker"
  log "engine $engine ready in $((SECONDS - t0))s: ClickHouse $(engine_version "$engine")"
}

engine_version() { "$DIR/$1/bin/python" -c 'import chdb; print(str(chdb.query("SELECT version()", "TabSeparated")).strip())'; }

cmd_install() {
  mkdir -p "$DIR"
  exec 8>"$DIR/.lock"
  flock 8
  local e
  for e in $ENGINES; do install_engine "$e"; done
}

cmd_pythons() {
  local e out=""
  for e in $ENGINES; do
    [ -x "$DIR/$e/bin/python" ] || die "engine $e not installed: run $0 install"
    out="${out:+$out:}$DIR/$e/bin/python"
  done
  echo "$out"
}

case "${1:-}" in
  install) cmd_install ;;
  pythons) cmd_pythons ;;
  versions) for e in $ENGINES; do echo "$e: ClickHouse $(engine_version "$e")"; done ;;
  *) echo "usage: $0 install|pythons|versions" >&2; exit 2 ;;
esac
