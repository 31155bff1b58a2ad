# Shell functions scripts/demo.sh and scripts/board-demo.sh share; they set STATE first.

# start_logged NAME MARKER TRIES COMMAND...: run COMMAND in the background, its output in
# $STATE/NAME.log and its pid in $STATE/NAME.pid; wait (up to TRIES x 0.2 s) for MARKER
# in the log; if the process exits first, show its log and exit 1.
start_logged() {
  local name="$1" marker="$2" tries="$3"
  shift 3
  nohup "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  for _ in $(seq 1 "$tries"); do
    grep -q "$marker" "$STATE/$name.log" 2>/dev/null && break
    if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      echo "the $name exited:"; cat "$STATE/$name.log"; exit 1
    fi
    sleep 0.2
  done
}
