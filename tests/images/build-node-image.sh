#!/usr/bin/env bash
# Builds the image `shoal-test/node:latest`: one test machine with a Docker engine of its own,
# without any registry. The given shoal binary, this machine's dockerd, containerd, its runc shim,
# runc, docker-init, docker-proxy, the docker CLI, iptables (nft, with its xtables modules), tc
# (netem) and a static busybox are copied with the shared libraries they link (as ldd lists them)
# into a rootfs that `docker import` turns into the image. The test image's tarball
# (`docker save shoal-test/busybox:latest`) is baked in at /images/busybox.tar.
#
# The entrypoint (/usr/local/bin/node-entrypoint) starts dockerd (which starts containerd),
# waits for it (bounded), loads the tarball and execs `shoal agent --pull never "$@"`. Run it
# privileged, with /var/lib/docker on a volume or a tmpfs (the inner engine uses vfs).
#
# Idempotent: the image carries a hash of its inputs in a label, and nothing is rebuilt when it
# matches. Concurrent runs are serialised by a lock file.
#
# Usage: build-node-image.sh SHOAL_BINARY [--image NAME:TAG]
set -euo pipefail

BIN="${1:?usage: build-node-image.sh SHOAL_BINARY [--image NAME:TAG]}"
shift
IMAGE="shoal-test/node:latest"
TASK_IMAGE="${SHOAL_TEST_IMAGE:-shoal-test/busybox:latest}"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --image) shift; IMAGE="${1:?--image needs a value}" ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
log() { echo "build-node-image: $*" >&2; }
[ -x "$BIN" ] || { log "$BIN is not an executable"; exit 1; }
docker image inspect "$TASK_IMAGE" >/dev/null 2>&1 \
    || { log "$TASK_IMAGE is missing: run build-busybox-image.sh first"; exit 1; }

LOCK="${TMPDIR:-/tmp}/shoal-node-image.lock"
exec 9>"$LOCK"
flock -w 300 9 || { log "timed out waiting for $LOCK"; exit 1; }

# The programs of a node: name in the image -> where it is on this machine.
find_program() {
    local path
    path="$(command -v "$1" 2>/dev/null || true)"
    [ -n "$path" ] || { log "this machine has no $1 (install the package that provides it)"; exit 1; }
    readlink -f "$path"
}
DOCKERD="$(find_program dockerd)"
CONTAINERD="$(find_program containerd)"
SHIM="$(find_program containerd-shim-runc-v2)"
RUNC="$(find_program runc)"
INIT="$(find_program docker-init)"
PROXY="$(find_program docker-proxy)"
CLI="$(find_program docker)"
TC="$(find_program tc)"
XTABLES="$(readlink -f "$(dirname "$(find_program iptables)")/xtables-nft-multi")"
[ -x "$XTABLES" ] || { log "no xtables-nft-multi next to iptables"; exit 1; }
XT_MODULES="/usr/lib/x86_64-linux-gnu/xtables"
[ -d "$XT_MODULES" ] || XT_MODULES="$(dirname "$(ldd "$XTABLES" | grep -oE '/[^ ]+libxtables[^ ]*')")/xtables"
BUSYBOX=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then
        BUSYBOX="$candidate"
        break
    fi
done
[ -n "$BUSYBOX" ] || { log "no static busybox (install busybox-static)"; exit 1; }
PROGRAMS=("$BIN" "$DOCKERD" "$CONTAINERD" "$SHIM" "$RUNC" "$INIT" "$PROXY" "$CLI" "$TC" "$XTABLES" "$BUSYBOX")

# Skip the build when the image was made from the same inputs.
INPUTS="$( (sha256sum "${PROGRAMS[@]}" "$0"; docker image inspect --format '{{.Id}}' "$TASK_IMAGE") \
    | sha256sum | cut -c1-32)"
LABEL="io.shoal.test.inputs"
CURRENT="$(docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null || true)"
if [ "$CURRENT" = "$INPUTS" ]; then
    log "$IMAGE is up to date"
    exit 0
fi
PREVIOUS="$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"
mkdir -p "$ROOT"/{bin,sbin,etc,root,tmp,proc,sys,dev,run,images,var/lib/docker,var/lib/shoal,var/log}
mkdir -p "$ROOT"/usr/{bin,sbin,local/bin}
chmod 1777 "$ROOT/tmp"
ln -s ../run "$ROOT/var/run"

copy_libs() {
    # The loader and the shared libraries, at the paths the binary looks for them.
    # A static program has none (grep finds nothing).
    { ldd "$1" 2>/dev/null || true; } | { grep -oE '/[^ ]+' || true; } | sort -u | while read -r lib; do
        [ -e "$ROOT$lib" ] && continue
        mkdir -p "$ROOT$(dirname "$lib")"
        cp -L "$lib" "$ROOT$lib"
    done
}
install_program() {
    # install_program SOURCE DEST_IN_IMAGE
    cp -L "$1" "$ROOT$2"
    chmod 0755 "$ROOT$2"
    copy_libs "$1"
}
install_program "$BIN" /usr/local/bin/shoal
install_program "$DOCKERD" /usr/bin/dockerd
install_program "$CONTAINERD" /usr/bin/containerd
install_program "$SHIM" /usr/bin/containerd-shim-runc-v2
install_program "$RUNC" /usr/bin/runc
install_program "$INIT" /usr/bin/docker-init
install_program "$PROXY" /usr/bin/docker-proxy
install_program "$CLI" /usr/bin/docker
install_program "$TC" /usr/sbin/tc
install_program "$XTABLES" /usr/sbin/xtables-nft-multi
for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -s xtables-nft-multi "$ROOT/usr/sbin/$name"
done
mkdir -p "$ROOT$XT_MODULES"
cp -L "$XT_MODULES"/*.so "$ROOT$XT_MODULES/"
for module in "$XT_MODULES"/*.so; do copy_libs "$module"; done

cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 0755 "$ROOT/bin/busybox"
while IFS= read -r applet; do
    [ -n "$applet" ] && [ "$applet" != busybox ] || continue
    # The real programs above win over busybox's applets of the same name.
    for dir in bin sbin usr/bin usr/sbin; do [ -e "$ROOT/$dir/$applet" ] && continue 2; done
    ln -s busybox "$ROOT/bin/$applet"
done < <("$BUSYBOX" --list)

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\ndocker:x:999:\n' >"$ROOT/etc/group"
docker save "$TASK_IMAGE" -o "$ROOT/images/busybox.tar"

cat >"$ROOT/usr/local/bin/node-entrypoint" <<'EOF'
#!/bin/sh
# A test machine: its own Docker engine, the test image loaded into it, then the shoal agent.
# Every wait is bounded; a failure prints the engine's log and exits.
set -eu
# A restarted container keeps its rootfs: the previous run's pid files would stop dockerd.
rm -rf /run/docker /run/docker.pid /run/containerd /var/run/docker.sock
mount -t tmpfs -o size=64m tmpfs /run 2>/dev/null || true
# Not `--privileged` (where the machine's bounding set lacks a capability, runc refuses it), but
# every other capability, no seccomp nor masked paths: cgroups and /sys come read-only, and the
# inner engine needs them writable.
for m in $(awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/mounts); do
    mount -o remount,bind,rw "$m" 2>/dev/null || true
done
mount -o remount,bind,rw /sys 2>/dev/null || true
fail() {
    echo "node-entrypoint: $*" >&2
    tail -n 40 /var/log/dockerd.log >&2 || true
    exit 1
}
dockerd --storage-driver vfs --data-root /var/lib/docker --log-level warn \
    --log-driver json-file --mtu 1400 ${SHOAL_NODE_DOCKERD_ARGS:-} >/var/log/dockerd.log 2>&1 &
tries=0
until docker version --format '{{.Server.Version}}' >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -le 120 ] || fail "the inner Docker engine did not answer within 60 s"
    sleep 0.5
done
docker load -i /images/busybox.tar >/dev/null || fail "docker load of the test image failed"
echo "node-entrypoint: engine ready, test image loaded" >&2
# A machine that starts cut off from its network (the harness's fault chain, which its `heal`
# flushes): its agent hears no one at first, as one whose mDNS answers were all lost.
if [ -n "${SHOAL_NODE_START_CUT_OFF:-}" ]; then
    iptables -N SHOAL-FAULTS
    iptables -I INPUT 1 -i eth0 -j SHOAL-FAULTS
    iptables -I OUTPUT 1 -o eth0 -j SHOAL-FAULTS
    iptables -A SHOAL-FAULTS -j DROP
    echo "node-entrypoint: started cut off from the network" >&2
fi
exec /usr/local/bin/shoal agent --pull never "$@"
EOF
chmod 0755 "$ROOT/usr/local/bin/node-entrypoint"

tar --numeric-owner --owner=0 --group=0 -C "$ROOT" -c . \
    | docker import \
        --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENTRYPOINT ["/usr/local/bin/node-entrypoint"]' \
        --change 'VOLUME ["/var/lib/docker"]' \
        --change "LABEL $LABEL=$INPUTS" \
        --message "shoal test node" \
        - "$IMAGE" >/dev/null
NEW="$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
[ -n "$NEW" ] || { log "docker import did not create $IMAGE"; exit 1; }
# The replaced image, unless a container still uses it.
if [ -n "$PREVIOUS" ] && [ "$PREVIOUS" != "$NEW" ]; then
    docker rmi "$PREVIOUS" >/dev/null 2>&1 || true
fi
log "built $IMAGE from $BIN"
