#!/usr/bin/env bash
# Makes sure a Docker daemon answers on this machine, for conan-provider-docker's tests and CI.
#
# - installs Debian's docker.io when `dockerd` is missing (needs root and apt);
# - reuses a daemon that already answers `docker info` (local socket or DOCKER_HOST);
# - otherwise starts `dockerd --storage-driver=vfs` in the background (log: $DOCKERD_LOG);
# - waits up to $DOCKER_UP_TIMEOUT seconds (default 60) and fails with a clear message.
# Idempotent: running it twice starts one daemon.
set -euo pipefail

timeout_s="${DOCKER_UP_TIMEOUT:-60}"
log="${DOCKERD_LOG:-/tmp/dockerd.log}"

say() { printf 'docker-up: %s\n' "$*" >&2; }
fail() { say "ERROR: $*"; exit 1; }

answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
    say "a Docker daemon already answers; reusing it"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || fail "dockerd is not installed and this is not root: install docker.io (apt-get install -y docker.io)"
    command -v apt-get >/dev/null 2>&1 || fail "dockerd is not installed and apt-get is not available: install Docker by hand"
    say "installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq docker.io >/dev/null || fail "apt-get install docker.io failed"
fi

if [ -n "${DOCKER_HOST:-}" ] && [[ "${DOCKER_HOST}" != unix://* ]]; then
    fail "DOCKER_HOST=${DOCKER_HOST} does not answer; start that daemon or unset DOCKER_HOST"
fi

if pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd is running but not answering yet; waiting for it"
else
    [ "$(id -u)" -eq 0 ] || fail "dockerd is not running and this is not root: start it with 'sudo dockerd --storage-driver=vfs &'"
    say "starting dockerd --storage-driver=vfs (log: $log)"
    # containerd's shim and dockerd's pid file may be stale after an unclean shutdown.
    rm -f /var/run/docker.pid
    nohup dockerd --storage-driver=vfs >"$log" 2>&1 &
fi

deadline=$((SECONDS + timeout_s))
until answers; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        say "last lines of $log:"
        tail -n 20 "$log" >&2 2>/dev/null || true
        fail "Docker did not answer within ${timeout_s}s"
    fi
    sleep 0.5
done
say "Docker answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
