# The lab for the demo and the benchmarks: the test harness itself (tests/common), run as
# examples/lab. It starts demo application servers, a real HAProxy (or two) in front of
# them and a real sshd with its own host key on 127.0.0.1, writes a plan for them, and
# removes everything when its stdin closes (when this shell exits).
# Source it, then: lab_build; lab_start N [HAPROXY_COUNT] [EXTRA_PLAN_KEYS].
# Needs: haproxy, sshd, ssh-keygen, socat (scripts/install-deps).

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROLLOUT=$LAB_ROOT/target/release/haproxy-rollout
LOAD=$LAB_ROOT/target/release/examples/load
LAB_BIN=$LAB_ROOT/target/release/examples/lab

lab_build() {
  (cd "$LAB_ROOT" && cargo build --release --quiet --bin haproxy-rollout \
    --example demo-app --example load --example lab)
}

# lab_start N [HAPROXY_COUNT] [EXTRA_PLAN_KEYS]: the lab with N servers, every one UP.
# Sets LAB_DIR, PLAN, FRONTEND_PORT, ADMIN_SOCKET, ADMIN_SOCKETS, APP_PORTS (an array),
# RESTART_SCRIPT, SSH_PORT, SSH_KEY, SSH_KNOWN_HOSTS, SSH_CONFIG.
lab_start() {
  coproc LAB_PROC { "$LAB_BIN" --servers "$1" --haproxy "${2:-1}" --poll-interval 200ms --extra "${3:-}"; }
  LAB_PROC_PID_SAVED=$LAB_PROC_PID
  trap lab_stop EXIT
  local line
  while read -r line <&"${LAB_PROC[0]}"; do
    [ "$line" = READY ] && break
    declare -g "${line%%=*}=${line#*=}"
  done
  [ "${line:-}" = READY ] || { echo "the lab did not start" >&2; return 1; }
  read -ra APP_PORTS <<<"$APP_PORTS"
}

lab_stop() {
  [ -n "${LAB_PROC_PID_SAVED:-}" ] || return 0
  [ -n "${LAB_PROC[1]:-}" ] && exec {LAB_PROC[1]}>&-
  wait "$LAB_PROC_PID_SAVED" 2>/dev/null || true
  LAB_PROC_PID_SAVED=
}

# The application processes now, one pid per server.
lab_app_pids() {
  local line
  echo pids >&"${LAB_PROC[1]}"
  read -r line <&"${LAB_PROC[0]}"
  echo "${line#PIDS=}"
}

# lab_start_load [PORT]: traffic through the frontend at PORT (default FRONTEND_PORT).
lab_start_load() {
  rm -f "$LAB_DIR/stop-load"
  "$LOAD" --target "127.0.0.1:${1:-$FRONTEND_PORT}" --clients 4 --slow-clients 1 --stop-file "$LAB_DIR/stop-load" \
    >"$LAB_DIR/load.out" 2>"$LAB_DIR/load.err" &
  LOAD_PID=$!
}

# Stops the traffic; LOAD_RESULT becomes "requests: N succeeded, M failed". Call it
# directly, not in $(...): only this shell can wait for the load process.
lab_stop_load() {
  touch "$LAB_DIR/stop-load"
  wait "$LOAD_PID" || true
  LOAD_RESULT=$(cat "$LAB_DIR/load.out")
}
