# Sourced by the bench-*-vs-pytorch.sh scripts: the lora-dist binary they need, waiting for a quiet
# machine before a run, and the run.
# Uses IDLE_WAIT (seconds to wait at most; 0 to skip) and IDLE_MAX (busy %).

# need_lora_dist SUBCOMMAND: builds $LORA_DIST if it is missing, and stops the script with one
# line if its `bench SUBCOMMAND` has no --json (a build older than the script).
need_lora_dist() {
  if [[ ! -x "$LORA_DIST" ]]; then
    echo "building $LORA_DIST (swift build -c release --product lora-dist)" >&2
    swift build -c release --product lora-dist >&2
  fi
  local help
  help=$("$LORA_DIST" bench "$1" --help 2>&1 || true)
  if [[ $help != *--json* ]]; then
    echo "$LORA_DIST bench $1 has no --json option: rebuild it (swift build -c release --product lora-dist)" >&2
    exit 1
  fi
}

# Busy % of all CPUs over 2 s, from /proc/stat.
cpu_busy() {
  local -a a b
  read -r -a a < /proc/stat
  sleep 2
  read -r -a b < /proc/stat
  local total=0 idle i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  idle=$((b[4] - a[4] + b[5] - a[5]))
  echo $((total > 0 ? 100 * (total - idle) / total : 0))
}

# Waits (up to IDLE_WAIT s) for the machine to quieten; prints the last busy %.
wait_idle() {
  local busy=0 t0=$SECONDS
  [[ $IDLE_WAIT -gt 0 ]] || { echo "-"; return; }
  while busy=$(cpu_busy); [[ $busy -ge $IDLE_MAX && $((SECONDS - t0)) -lt $IDLE_WAIT ]]; do :; done
  echo "$busy"
}

# run_logged LOG CMD...: waits for a quiet machine (wait_idle), runs CMD with its output in LOG
# (headed by the command and the load), and leaves its last JSON line in RUN_JSON, the busy %
# before it in RUN_BUSY and its start in RUN_T0 (SECONDS). A failed run, or one that printed
# no JSON line, stops the script with the log's tail. Needs RUN_TIMEOUT.
run_logged() {
  local log=$1; shift
  RUN_BUSY=$(wait_idle)
  RUN_T0=$SECONDS
  { echo "# $*"; echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg); CPUs $RUN_BUSY % busy just before"; } > "$log"
  if ! timeout --kill-after=10 "$RUN_TIMEOUT" "$@" >> "$log" 2>&1; then
    echo "FAILED: $* (log $log):" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  RUN_JSON=$(grep '^{' "$log" | tail -n 1 || true)
  if [[ -z $RUN_JSON ]]; then
    echo "no JSON line from: $* (log $log)" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
}
