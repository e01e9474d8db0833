#!/usr/bin/env bash
# Builds the image `shoal-test/agent:latest` that runs one shoal agent as a node of a test
# cluster, without any registry: the given shoal binary with the shared libraries it links (as
# ldd lists them), and a static busybox for a shell. The agent in it drives the Docker engine
# whose socket the test mounts at /var/run/docker.sock.
#
# Usage: build-agent-image.sh SHOAL_BINARY [--image NAME:TAG]
set -euo pipefail

BIN="${1:?usage: build-agent-image.sh SHOAL_BINARY [--image NAME:TAG]}"
shift
IMAGE="shoal-test/agent:latest"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --image) shift; IMAGE="${1:?--image needs a value}" ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
log() { echo "build-agent-image: $*" >&2; }
[ -x "$BIN" ] || { log "$BIN is not an executable"; exit 1; }

LOCK="${TMPDIR:-/tmp}/shoal-agent-image.lock"
exec 9>"$LOCK"
flock -w 300 9 || { log "timed out waiting for $LOCK"; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"
mkdir -p "$ROOT"/{bin,etc,root,tmp,proc,sys,dev,var/lib,var/run,usr/local/bin}
chmod 1777 "$ROOT/tmp"
cp "$BIN" "$ROOT/usr/local/bin/shoal"
# The shared libraries and the loader, at the paths the binary looks for them.
ldd "$BIN" | grep -oE '/[^ ]+' | sort -u | while read -r lib; do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
BUSYBOX=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then
        BUSYBOX="$candidate"
        break
    fi
done
if [ -n "$BUSYBOX" ]; then
    cp "$BUSYBOX" "$ROOT/bin/busybox"
    for applet in sh cat ls ps sleep kill ip; do ln -sf busybox "$ROOT/bin/$applet"; done
fi
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"

tar --numeric-owner --owner=0 --group=0 -C "$ROOT" -c . \
    | docker import \
        --change 'ENV PATH=/usr/local/bin:/bin' \
        --change 'ENTRYPOINT ["/usr/local/bin/shoal"]' \
        --change 'CMD ["agent", "--pull", "never"]' \
        --message "shoal test agent" \
        - "$IMAGE" >/dev/null
docker image inspect "$IMAGE" >/dev/null 2>&1 || { log "docker import did not create $IMAGE"; exit 1; }
log "built $IMAGE from $BIN"
