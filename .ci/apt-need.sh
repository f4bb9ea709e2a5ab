#!/usr/bin/env bash
# Makes sure a command the tests need is installed: `apt-need.sh COMMAND [PACKAGE]` installs
# Debian's PACKAGE (default: COMMAND) when COMMAND is missing (needs root and apt), and fails
# with a clear message when it cannot. Idempotent: nothing happens when COMMAND is there.
set -euo pipefail

cmd="${1:?usage: apt-need.sh COMMAND [PACKAGE]}"
pkg="${2:-$cmd}"

say() { printf 'apt-need: %s\n' "$*" >&2; }
fail() { say "ERROR: $*"; exit 1; }

if command -v "$cmd" >/dev/null 2>&1; then
    say "$cmd is installed ($(command -v "$cmd"))"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || fail "$cmd is not installed and this is not root: apt-get install -y $pkg"
command -v apt-get >/dev/null 2>&1 || fail "$cmd is not installed and apt-get is not available: install $pkg by hand"
say "installing $pkg"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "$pkg" >/dev/null || fail "apt-get install $pkg failed"
command -v "$cmd" >/dev/null 2>&1 || fail "$pkg is installed but $cmd is still missing"
say "$cmd is installed ($(command -v "$cmd"))"
