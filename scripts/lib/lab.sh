# A lab on 127.0.0.1 for the demo and the benchmark: demo application servers, a real
# HAProxy in front of them, a real sshd with its own host key and known_hosts, and live
# traffic. Source it, then call the functions in order; `lab_cleanup` runs on exit.
# Needs: haproxy, sshd, ssh-keygen, socat (scripts/install-deps) and a release build.

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROLLOUT=$LAB_ROOT/target/release/haproxy-rollout
DEMO_APP=$LAB_ROOT/target/release/examples/demo-app
LOAD=$LAB_ROOT/target/release/examples/load
LAB_PIDS=()

lab_build() {
  (cd "$LAB_ROOT" && cargo build --release --quiet --bin haproxy-rollout --example demo-app --example load)
}

lab_init() {
  LAB=$(mktemp -d /tmp/hr-lab.XXXXXX)
  trap lab_cleanup EXIT
}

lab_cleanup() {
  for pid in "${LAB_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for file in "$LAB"/app-*.pid; do [ -f "$file" ] && kill "$(cat "$file")" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$LAB"
}

lab_free_port() {
  local port
  # Below the ephemeral range (32768 and up), so that no outgoing connection holds it.
  for port in $(shuf -i 20000-32000 -n 200); do
    if ! ss -Hltn "sport = :$port" | grep -q .; then echo "$port"; return 0; fi
  done
  echo "no free port" >&2
  return 1
}

lab_wait_port() {
  for _ in $(seq 400); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.025
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# The restart command the rollout runs over SSH: kills the application on PORT, waits until
# it is gone, and starts a new one detached on the same port.
lab_write_restart_script() {
  cat >"$LAB/restart-app" <<SCRIPT
#!/bin/sh
set -eu
port=\$1
pidfile=$LAB/app-\$port.pid
if [ -f "\$pidfile" ]; then
  pid=\$(cat "\$pidfile")
  kill "\$pid" 2>/dev/null || true
  while [ -e "/proc/\$pid" ] && ! grep -q ') Z ' "/proc/\$pid/stat" 2>/dev/null; do sleep 0.02; done
fi
rm -f "\$pidfile"
setsid $DEMO_APP --listen 127.0.0.1:\$port --pid-file "\$pidfile" </dev/null >/dev/null 2>&1 &
echo "restarted the application on port \$port"
SCRIPT
  chmod +x "$LAB/restart-app"
}

# lab_start_apps N: N application servers, ports in APP_PORTS.
lab_start_apps() {
  APP_PORTS=()
  for _ in $(seq "$1"); do
    local port
    port=$(lab_free_port)
    "$LAB/restart-app" "$port" >/dev/null
    lab_wait_port "$port"
    APP_PORTS+=("$port")
  done
}

lab_start_sshd() {
  mkdir -p /run/sshd "$LAB/ssh"
  ssh-keygen -q -t ed25519 -N '' -C lab-host -f "$LAB/ssh/host_key"
  ssh-keygen -q -t ed25519 -N '' -C lab-client -f "$LAB/ssh/client_key"
  cp "$LAB/ssh/client_key.pub" "$LAB/ssh/authorized_keys"
  SSH_PORT=$(lab_free_port)
  cat >"$LAB/ssh/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $LAB/ssh/host_key
AuthorizedKeysFile $LAB/ssh/authorized_keys
PidFile $LAB/ssh/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
MaxSessions 64
CFG
  /usr/sbin/sshd -D -f "$LAB/ssh/sshd_config" -E "$LAB/ssh/sshd.log" &
  LAB_PIDS+=($!)
  lab_wait_port "$SSH_PORT"
  echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$LAB/ssh/host_key.pub")" >"$LAB/ssh/known_hosts"
  printf 'Host *\n    BatchMode yes\n    LogLevel ERROR\n' >"$LAB/ssh/ssh_config"
}

# lab_start_haproxy RISE FALL INTER [NAME]: an HAProxy in front of every application, its
# runtime API at $LAB/admin.sock (NAME given: $LAB/NAME.sock), its frontend at FRONTEND_PORT.
lab_start_haproxy() {
  local rise=$1 fall=$2 inter=$3 name=${4:-} servers="" i=0
  local socket=$LAB/admin.sock config=$LAB/haproxy.cfg
  if [ -n "$name" ]; then socket=$LAB/$name.sock config=$LAB/$name.cfg; fi
  for port in "${APP_PORTS[@]}"; do
    i=$((i + 1))
    servers+="    server app$i 127.0.0.1:$port check inter $inter rise $rise fall $fall"$'\n'
  done
  FRONTEND_PORT=$(lab_free_port)
  cat >"$config" <<CFG
global
    stats socket $socket level admin
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$FRONTEND_PORT
    default_backend be_app
backend be_app
    option httpchk GET /health
    http-check expect status 200
$servers
CFG
  haproxy -db -f "$config" >"$config.log" 2>&1 &
  LAB_PIDS+=($!)
  lab_wait_port "$FRONTEND_PORT"
}

# lab_write_plan POLL_INTERVAL: the plan for this lab in $LAB/plan.yaml.
lab_write_plan() {
  {
    printf 'version: 1\nhaproxy:\n  - name: lb1\n    socket: %s/admin.sock\nbackends: [be_app]\nservers:\n' "$LAB"
    for i in $(seq "${#APP_PORTS[@]}"); do printf '  - name: app%d\n' "$i"; done
    printf 'ssh:\n  user: root\n  port: %s\n  identity_file: %s\n  known_hosts_file: %s\n  config_file: %s\n' \
      "$SSH_PORT" "$LAB/ssh/client_key" "$LAB/ssh/known_hosts" "$LAB/ssh/ssh_config"
    printf 'restart:\n  command: %s {port}\n  timeout: 30s\n' "$LAB/restart-app"
    printf 'health:\n  url: http://{addr}:{port}/health\n  within: 20s\n'
    printf 'ready:\n  timeout: 20s\ncapacity:\n  min_up: 1\npoll_interval: %s\n' "$1"
  } >"$LAB/plan.yaml"
}

lab_wait_all_up() {
  for _ in $(seq 200); do
    local up
    up=$("$ROLLOUT" --output json status "$LAB/plan.yaml" 2>/dev/null | grep -c '"in_rotation":true' || true)
    [ "$up" = "${#APP_PORTS[@]}" ] && return 0
    sleep 0.1
  done
  echo "not every server came UP" >&2
  return 1
}

# lab_start_load [PORT]: traffic through the frontend at PORT (default FRONTEND_PORT).
lab_start_load() {
  rm -f "$LAB/stop-load"
  "$LOAD" --target "127.0.0.1:${1:-$FRONTEND_PORT}" --clients 4 --slow-clients 1 --stop-file "$LAB/stop-load" \
    >"$LAB/load.out" 2>"$LAB/load.err" &
  LOAD_PID=$!
}

# Stops the traffic; LOAD_RESULT becomes "requests: N succeeded, M failed". Call it
# directly, not in $(...): only this shell can wait for the load process.
lab_stop_load() {
  touch "$LAB/stop-load"
  wait "$LOAD_PID" || true
  LOAD_RESULT=$(cat "$LAB/load.out")
}

# The application processes now, one pid per server.
lab_app_pids() {
  local file
  for file in "$LAB"/app-*.pid; do printf '%s ' "$(cat "$file")"; done
}
