#!/usr/bin/env bash
# Builds a minimal Node.js base image from the host's own node binary, because no image
# registry is reachable in tests and CI: /usr/bin/node, the shared libraries `ldd` lists,
# and busybox (static) as /bin/sh plus its applets (wget for HEALTHCHECKs, sleep, ...).
#
# Usage: make-node-image.sh [TAG]   (default conan-test/node:20). Does nothing when TAG exists.
# Shipped as `conan docker base-image` (the CLI embeds this file); tests run it directly.
set -euo pipefail
tag="${1:-conan-test/node:20}"
node_bin="${NODE_BIN:-/usr/bin/node}"

if docker image inspect "$tag" >/dev/null 2>&1; then
    exit 0
fi
[ -x "$node_bin" ] || { echo "make-node-image: $node_bin not found" >&2; exit 1; }
busybox="$(command -v busybox || true)"
if { [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; } && [ ! -x /bin/busybox ] \
    && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make-node-image: installing busybox-static" >&2
    # A concurrent apt-get (another build, the CI's installs) holds dpkg's lock: wait for it.
    wait_lock=(-o DPkg::Lock::Timeout=300)
    DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq busybox-static >/dev/null 2>&1 \
        || { apt-get "${wait_lock[@]}" update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq busybox-static >/dev/null; }
    busybox="$(command -v busybox || true)"
fi
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    # Not there, or not static: Debian's busybox-static has what we need.
    if [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then
        busybox=/bin/busybox
    else
        echo "make-node-image: a static busybox is needed (apt-get install -y busybox-static)" >&2
        exit 1
    fi
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/tmp" "$root/etc" "$root/app"
chmod 1777 "$root/tmp"
cp "$node_bin" "$root/usr/local/bin/node"
ldd "$node_bin" | awk '/=>/ { print $3 } /^[ \t]*\/lib/ { print $1 }' | while read -r lib; do
    [ -n "$lib" ] && [ -e "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp "$busybox" "$root/bin/busybox"
for applet in sh ls cat echo sleep wget env kill ps true false mkdir rm; do
    ln -s busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"

tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    -c 'WORKDIR /app' \
    -c 'CMD ["node"]' \
    - "$tag" >/dev/null
echo "make-node-image: built $tag" >&2
