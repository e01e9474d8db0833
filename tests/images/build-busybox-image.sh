#!/usr/bin/env bash
# Builds the local test image `shoal-test/busybox:latest` without any registry.
#
# A static busybox (Debian's busybox-static: an installed /bin/busybox if it is static, otherwise
# the package fetched with `apt-get download`) is laid into a rootfs with one symlink per applet,
# beside /bin/udp-echo (udp-echo.rs, built statically with rustc: busybox has no UDP server or
# client), then imported with `docker import`. Idempotent: nothing happens when the image of
# this version already exists, unless --force is given. Concurrent runs are serialised by a
# lock file.
#
# Usage: build-busybox-image.sh [--force] [--image NAME:TAG]
set -euo pipefail

IMAGE="${SHOAL_TEST_IMAGE:-shoal-test/busybox:latest}"
FORCE=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --image) shift; IMAGE="${1:?--image needs a value}" ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "build-busybox-image: $*" >&2; }

# Bumped whenever the image's contents change; an image of another version is rebuilt.
VERSION="shoal test busybox v2 (udp-echo)"

image_exists() {
    [ "$(docker image inspect --format '{{.Comment}}' "$IMAGE" 2>/dev/null)" = "$VERSION" ]
}

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    log "no Docker engine answers (is dockerd running?)"
    exit 1
fi

# Serialise concurrent builders (several test binaries may call this at once).
LOCK="${TMPDIR:-/tmp}/shoal-busybox-image.lock"
exec 9>"$LOCK"
flock -w 300 9 || { log "timed out waiting for $LOCK"; exit 1; }

if [ "$FORCE" -eq 0 ] && image_exists; then
    log "$IMAGE already exists (use --force to rebuild)"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

is_static() {
    # ldd prints "not a dynamic executable" (glibc) or "statically linked" for static binaries.
    local out
    out="$(ldd "$1" 2>&1 || true)"
    case "$out" in
        *"not a dynamic executable"*|*"statically linked"*) return 0 ;;
        *) return 1 ;;
    esac
}

BUSYBOX=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && is_static "$candidate"; then
        BUSYBOX="$candidate"
        break
    fi
done

if [ -z "$BUSYBOX" ]; then
    log "fetching busybox-static with apt-get download"
    if ! (cd "$WORK" && apt-get download busybox-static >/dev/null 2>"$WORK/apt.err"); then
        log "download failed ($(tail -n1 "$WORK/apt.err")); running apt-get update and retrying"
        apt-get update >/dev/null
        (cd "$WORK" && apt-get download busybox-static >/dev/null)
    fi
    deb="$(ls "$WORK"/busybox-static_*.deb)"
    dpkg-deb -x "$deb" "$WORK/pkg"
    BUSYBOX="$WORK/pkg/bin/busybox"
    if ! is_static "$BUSYBOX"; then
        log "$BUSYBOX from the package is not static"
        exit 1
    fi
fi
log "using $BUSYBOX"

ROOT="$WORK/rootfs"
mkdir -p "$ROOT"/{bin,etc,root,tmp,proc,sys,dev,var/www,var/run}
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 0755 "$ROOT/bin/busybox"
HERE="$(cd "$(dirname "$0")" && pwd)"
rustc -O -C target-feature=+crt-static --edition 2021 "$HERE/udp-echo.rs" -o "$ROOT/bin/udp-echo"
is_static "$ROOT/bin/udp-echo" || { log "udp-echo did not link statically"; exit 1; }

# One relative symlink per applet, all in /bin (PATH=/bin in the image).
count=0
while IFS= read -r applet; do
    [ -n "$applet" ] || continue
    [ "$applet" = "busybox" ] && continue
    ln -sf busybox "$ROOT/bin/$applet"
    count=$((count + 1))
done < <("$ROOT/bin/busybox" --list)
for needed in sh sleep nc httpd true false echo cat wget trap kill ps; do
    # `trap` is a shell builtin, not an applet; the others must exist.
    [ "$needed" = "trap" ] && continue
    [ -e "$ROOT/bin/$needed" ] || { log "busybox lacks applet $needed"; exit 1; }
done

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
echo 'shoal test image' >"$ROOT/var/www/index.html"

tar --numeric-owner --owner=0 --group=0 -C "$ROOT" -c . \
    | docker import \
        --change 'CMD ["/bin/sh"]' \
        --change 'ENV PATH=/bin' \
        --message "$VERSION" \
        - "$IMAGE" >/dev/null

image_exists || { log "docker import did not create $IMAGE"; exit 1; }
log "built $IMAGE with $count applets and udp-echo"
