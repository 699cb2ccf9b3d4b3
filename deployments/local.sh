#!/usr/bin/env bash
# A local Prefect stack for pfd: server on 127.0.0.1, the `pfd-process` work pool, the
# deployments of ../prefect.yaml, and a process worker.  Stop it cleanly with `stop`.
#
#   deployments/local.sh start     # prints the PREFECT_API_URL to export
#   deployments/local.sh status
#   deployments/local.sh stop      # worker first (it needs two SIGINTs), then the server
#
# Settings (environment): PFD_PREFECT_HOME (default: <repo>/.prefect-local; the server's
# database, logs and pid files live there), PFD_PREFECT_PORT (default 4200),
# PFD_WORK_POOL (default pfd-process).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${PFD_VENV_BIN:-$REPO/.venv/bin}"
HOME_DIR="${PFD_PREFECT_HOME:-$REPO/.prefect-local}"
PORT="${PFD_PREFECT_PORT:-4200}"
POOL="${PFD_WORK_POOL:-pfd-process}"
STATE="$HOME_DIR/pfd-local"
API="http://127.0.0.1:$PORT/api"

export PREFECT_HOME="$HOME_DIR"
export PREFECT_API_URL="$API"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_UI_API_URL="$API"
export PYTHONUNBUFFERED=1

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.5
  done
}

healthy() { "$BIN/python" - "$API" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/health", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

start() {
  mkdir -p "$STATE"
  if alive server; then
    echo "server already running (pid $(cat "$STATE/server.pid"))"
  else
    setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" \
      >"$STATE/server.log" 2>&1 </dev/null &
    echo $! >"$STATE/server.pid"
    if ! wait_for 120 healthy; then
      echo "Prefect server did not become healthy on $API; log: $STATE/server.log" >&2
      tail -20 "$STATE/server.log" >&2
      exit 1
    fi
  fi
  # Idempotent: an existing pool is kept.
  "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1 \
    || "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
  (cd "$REPO" && "$BIN/prefect" --no-prompt deploy --all >"$STATE/deploy.log" 2>&1) || {
    echo "prefect deploy failed; log: $STATE/deploy.log" >&2; tail -30 "$STATE/deploy.log" >&2
    exit 1; }
  if ! alive worker; then
    # The worker runs flows with the repo as working directory (prefect.yaml pull step).
    cd "$REPO"
    setsid "$BIN/prefect" worker start --pool "$POOL" --type process \
      >"$STATE/worker.log" 2>&1 </dev/null &
    echo $! >"$STATE/worker.pid"
    if ! wait_for 60 grep -q "started" "$STATE/worker.log"; then
      echo "worker did not start; log: $STATE/worker.log" >&2; tail -20 "$STATE/worker.log" >&2
      exit 1
    fi
  fi
  echo "Prefect server: $API (UI: http://127.0.0.1:$PORT), pool $POOL, worker pid" \
       "$(cat "$STATE/worker.pid")"
  echo "export PREFECT_API_URL=$API"
}

stop_one() {  # stop_one NAME SIGNALS...: send each signal 2 s apart until it exits
  local name=$1; shift
  alive "$name" || { rm -f "$STATE/$name.pid"; return 0; }
  local pid; pid=$(cat "$STATE/$name.pid")
  for sig in "$@"; do
    kill "-$sig" "$pid" 2>/dev/null || true
    if wait_for 15 bash -c "! kill -0 $pid"; then rm -f "$STATE/$name.pid"; return 0; fi
  done
  echo "$name (pid $pid) ignored ${*}; killing its process group" >&2
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$STATE/$name.pid"
}

stop() {
  # The worker treats the first SIGINT as "finish up" and the second as "exit now".
  stop_one worker INT INT TERM
  stop_one server INT TERM
  echo "stopped"
}

status() {
  for name in server worker; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"
    else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
