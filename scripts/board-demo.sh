#!/usr/bin/env bash
# Start the board for `make demo`: a `demo` account (its password kept, readable only by
# you, in $STATE/board-password) and `beestown web` on loopback. Called by scripts/demo.sh
# with TEMPORAL_ADDRESS and BEESTOWN_UI_URL set; `scripts/demo.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${BEESTOWN_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/beestown}"
PY="${PYTHON:-python}"
BOARD_PORT="${BEESTOWN_BOARD_PORT:-8377}"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

if [ ! -s "$STATE/board-password" ]; then
  (umask 077 && "$PY" -c "import secrets; print(secrets.token_urlsafe(12))" \
    >"$STATE/board-password")
fi
"$PY" -m cli user add demo --acts-for "${BEESTOWN_DEMO_ACTS_FOR:-ceo}" --replace \
  --password-stdin <"$STATE/board-password" >/dev/null

if [ -f "$STATE/board.pid" ]; then kill "$(cat "$STATE/board.pid")" 2>/dev/null || true; fi
start_logged board "board: http" 100 "$PY" -m cli web --port "$BOARD_PORT"
echo "board: http://127.0.0.1:$BOARD_PORT  (sign in as demo, password in $STATE/board-password)"
