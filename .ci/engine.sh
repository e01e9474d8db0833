# Sourced by .ci/run: make sure a Docker engine answers and runs containers, within bounded time.
#
# The machine's own engine is used when it answers. When no engine runs, one is started. When the
# machine's engine runs but hangs (seen here once: `docker run` blocked for good with dozens of
# containers "Up" and no shim behind them), CI does not touch it: it starts a private engine of its
# own, on its own socket, data root, exec root and bridge, with the vfs storage driver (no FUSE),
# and exports DOCKER_HOST so that the docker CLI, bollard and the tests all use it.
# SHOAL_CI_ENGINE=private forces the private engine (to check this path).

PRIVATE_RUN=/run/shoal-ci-engine
PRIVATE_ROOT=/var/lib/shoal-ci-engine
PRIVATE_BRIDGE=shoalci0
PRIVATE_BRIDGE_CIDR=172.30.99.1/24
TEST_IMAGE="${SHOAL_TEST_IMAGE:-shoal-test/busybox:latest}"

engine_answers() { timeout 20 docker info >/dev/null 2>&1; }

wait_for_engine() {
  local seconds="$1"
  for _ in $(seq 1 "$seconds"); do
    engine_answers && return 0
    sleep 1
  done
  return 1
}

engine_diagnostics() {
  echo "-- engine processes:"
  ps -eo pid,etimes,stat,args | grep -E '[d]ockerd|[c]ontainerd' || true
  for f in /tmp/shoal-ci-dockerd.log "$PRIVATE_RUN/dockerd.log"; do
    [ -f "$f" ] && { echo "-- tail of $f:"; tail -n 30 "$f"; }
  done
  return 0
}

start_private_engine() {
  echo "starting a private Docker engine at unix://$PRIVATE_RUN/docker.sock"
  mkdir -p "$PRIVATE_RUN" "$PRIVATE_ROOT"
  if ! ip link show "$PRIVATE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$PRIVATE_BRIDGE" type bridge
    ip addr add "$PRIVATE_BRIDGE_CIDR" dev "$PRIVATE_BRIDGE"
  fi
  ip link set "$PRIVATE_BRIDGE" up
  echo '{"storage-driver": "vfs", "log-driver": "json-file", "mtu": 1400}' >"$PRIVATE_RUN/daemon.json"
  (dockerd --config-file "$PRIVATE_RUN/daemon.json" \
    --host "unix://$PRIVATE_RUN/docker.sock" \
    --data-root "$PRIVATE_ROOT" --exec-root "$PRIVATE_RUN/exec" \
    --pidfile "$PRIVATE_RUN/dockerd.pid" \
    --bridge "$PRIVATE_BRIDGE" --iptables=false --ip-masq=false \
    >"$PRIVATE_RUN/dockerd.log" 2>&1 &)
  export DOCKER_HOST="unix://$PRIVATE_RUN/docker.sock"
  if ! wait_for_engine 60; then
    echo "the private engine did not answer within 60 s"
    engine_diagnostics
    return 1
  fi
}

ensure_engine() {
  if [ "${SHOAL_CI_ENGINE:-}" = private ]; then
    start_private_engine
    return
  fi
  engine_answers && return 0
  if ! pgrep -x dockerd >/dev/null; then
    echo "no Docker engine runs: starting dockerd"
    (dockerd >/tmp/shoal-ci-dockerd.log 2>&1 &)
    wait_for_engine 60 && return 0
  fi
  echo "the machine's Docker engine does not answer within 20 s"
  engine_diagnostics
  start_private_engine
}

runs_a_container() {
  timeout 90 docker run --rm --pull never --network none "$TEST_IMAGE" true >/dev/null
}

ensure_engine_runs_containers() {
  runs_a_container && return 0
  echo "the engine at ${DOCKER_HOST:-the default socket} cannot run a container within 90 s"
  engine_diagnostics
  [ "${DOCKER_HOST:-}" = "unix://$PRIVATE_RUN/docker.sock" ] && return 1
  start_private_engine
  timeout 300 bash tests/images/build-busybox-image.sh
  runs_a_container
}
