#!/usr/bin/env bash
# Start what a first run needs (Temporal dev server with its Web UI, a worker on the
# embedded PostgreSQL and the local sandbox), then run the example plan to the end.
# `scripts/demo.sh stop` stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${BEESTOWN_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/beestown}"
mkdir -p "$STATE"
PORT="${BEESTOWN_DEMO_PORT:-7233}"
UI_PORT="${BEESTOWN_DEMO_UI_PORT:-8233}"
PY="${PYTHON:-python}"

stop() {
  for name in board worker temporal; do
    if [ -f "$STATE/$name.pid" ]; then
      kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
      rm -f "$STATE/$name.pid"
    fi
  done
}
if [ "${1:-}" = stop ]; then stop; echo "stopped"; exit 0; fi

export TEMPORAL_ADDRESS="127.0.0.1:$PORT"
export BEESTOWN_UI_URL="http://localhost:$UI_PORT"

if ! temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; then
  echo "starting Temporal dev server on $TEMPORAL_ADDRESS (Web UI $BEESTOWN_UI_URL)"
  # WAL + a fast transfer-queue poll: stock settings add ~250 ms per hop on these machines.
  nohup temporal server start-dev --ip 127.0.0.1 --port "$PORT" --ui-port "$UI_PORT" \
    --db-filename "$STATE/temporal.db" --log-level warn \
    --sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=normal \
    --dynamic-config-value history.transferProcessorMaxPollRPS=1000 \
    >"$STATE/temporal.log" 2>&1 &
  echo $! >"$STATE/temporal.pid"
  for _ in $(seq 1 100); do
    temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1 && break
    sleep 0.2
  done
fi

# Always a fresh worker, so it runs the code in this checkout.
if [ -f "$STATE/worker.pid" ]; then kill "$(cat "$STATE/worker.pid")" 2>/dev/null || true; fi
echo "starting worker (log: $STATE/worker.log)"
nohup "$PY" worker.py >"$STATE/worker.log" 2>&1 &
echo $! >"$STATE/worker.pid"
for _ in $(seq 1 150); do
  grep -q "worker ready" "$STATE/worker.log" 2>/dev/null && break
  if ! kill -0 "$(cat "$STATE/worker.pid")" 2>/dev/null; then
    echo "the worker exited:"; cat "$STATE/worker.log"; exit 1
  fi
  sleep 0.2
done

bash scripts/board-demo.sh

status=0
"$PY" starter.py --plan "${1:-examples/demo.yaml}" --wait || status=$?
cat <<MSG

Temporal Web UI: $BEESTOWN_UI_URL (the task's history is linked above)
Inspect it:   temporal workflow show -w <task-id> --address $TEMPORAL_ADDRESS
Stop it all:  make stop
MSG
exit $status
