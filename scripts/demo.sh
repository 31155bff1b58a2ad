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
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# Kill the process a pid file names only if it is still the one we started (a pid may have
# been reused by another program since): its command line must show what we ran.
stop_one() {
  local name="$1" expect="$2" pid
  [ -f "$STATE/$name.pid" ] || return 0
  pid="$(cat "$STATE/$name.pid")"
  if ps -o args= -p "$pid" 2>/dev/null | grep -q -- "$expect"; then
    kill "$pid" 2>/dev/null || true
    # Wait for it to exit: a worker gives its running steps BEESTOWN_SHUTDOWN_GRACE (5 s)
    # to finish and must still reach Temporal to report them. Past that, kill it.
    local waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 150 ]; do
      sleep 0.1; waited=$((waited + 1))
    done
    kill -9 "$pid" 2>/dev/null || true
  else
    echo "$name: pid $pid is no longer ours; left alone"
  fi
  rm -f "$STATE/$name.pid"
}
stop() {
  stop_one board "cli web"
  stop_one worker "worker.py"
  stop_one temporal "temporal server start-dev"
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
    --search-attribute BeesTownStatus=Keyword --search-attribute BeesTownAssignee=Keyword \
    --search-attribute BeesTownPriority=Keyword --search-attribute BeesTownProject=Keyword \
    >"$STATE/temporal.log" 2>&1 &
  echo $! >"$STATE/temporal.pid"
  for _ in $(seq 1 100); do
    temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1 && break
    sleep 0.2
  done
fi

# Always a fresh worker, so it runs the code in this checkout.
stop_one worker "worker.py"
echo "starting worker (log: $STATE/worker.log)"
start_logged worker "worker ready" 150 "$PY" worker.py

bash scripts/board-demo.sh

TASK_ID="demo-$(date +%Y%m%d-%H%M%S)"
status=0
"$PY" starter.py --plan "${1:-examples/demo.yaml}" --id "$TASK_ID" --wait || status=$?
cat <<MSG

Next, in a new shell, from $(pwd):
  source .venv/bin/activate        # puts beestown, temporal and python's packages on PATH
  export TEMPORAL_ADDRESS=$TEMPORAL_ADDRESS BEESTOWN_STATE_DIR=$STATE BEESTOWN_UI_URL=$BEESTOWN_UI_URL
  beestown tasks                   # what ran
  beestown tree $TASK_ID
  temporal workflow show -w $TASK_ID --address $TEMPORAL_ADDRESS
Temporal Web UI: $BEESTOWN_UI_URL/namespaces/default/workflows/$TASK_ID
The board:       http://127.0.0.1:${BEESTOWN_BOARD_PORT:-8377}/task?id=$TASK_ID  (sign in as demo; password in $STATE/board-password)
Then the organization, with no LLM: see "The organization, step by step" in README.md
  beestown org load examples/org-walkthrough/org.yaml
  beestown run --plan examples/org-walkthrough/plan.yaml --wait
Stop it all: make stop   (the worker log: $STATE/worker.log)
MSG
exit $status
