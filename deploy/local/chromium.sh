#!/usr/bin/env bash
# Debian's Chromium for the web UI's browser suite (web/browser_test.go, driven with chromedp).
#
#   deploy/local/chromium.sh install|path|version
#
# install  installs the `chromium` package (and a font) with apt when no chromium is on PATH;
#          nothing else is downloaded: the browser never fetches a build of its own.
# path     prints the browser's path (what make test exports as PARTNERS_TEST_BROWSER).
# version  prints its version.
#
# Environment:
#   PARTNERS_CHROMIUM   a browser to use instead (its path); install then checks it exists.
set -euo pipefail

log() { printf '[chromium] %s\n' "$*" >&2; }
die() { printf '[chromium] ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

find_browser() {
  if [ -n "${PARTNERS_CHROMIUM:-}" ]; then
    [ -x "$PARTNERS_CHROMIUM" ] || die "PARTNERS_CHROMIUM=$PARTNERS_CHROMIUM is not an executable"
    echo "$PARTNERS_CHROMIUM"; return 0
  fi
  command -v chromium 2>/dev/null || true
}

install_browser() {
  if [ -n "$(find_browser)" ]; then return 0; fi
  # one apt run at a time on this machine (the other install scripts may run in parallel)
  exec 9>"${TMPDIR:-/tmp}/partners-engine-apt.lock"
  flock 9
  if [ -n "$(find_browser)" ]; then exec 9>&-; return 0; fi
  log "installing chromium from apt"
  local t0=$SECONDS
  as_root apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
    --no-install-recommends chromium fonts-dejavu-core >/dev/null
  [ -n "$(find_browser)" ] || die "chromium installed but not on PATH"
  log "installed in $((SECONDS - t0))s"
  exec 9>&-
}

case "${1:-install}" in
  install) install_browser; log "$("$(find_browser)" --version 2>/dev/null || echo "chromium at $(find_browser)")" ;;
  path)    b="$(find_browser)"; [ -n "$b" ] || die "no chromium: run deploy/local/chromium.sh install"; echo "$b" ;;
  version) b="$(find_browser)"; [ -n "$b" ] || die "no chromium"; "$b" --version 2>/dev/null ;;
  *) die "usage: $0 install|path|version" ;;
esac
