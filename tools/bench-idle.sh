# Sourced by the bench-*-vs-pytorch.sh scripts: waiting for a quiet machine before a run.
# Uses IDLE_WAIT (seconds to wait at most; 0 to skip) and IDLE_MAX (busy %).

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
