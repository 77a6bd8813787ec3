#!/usr/bin/env bash
# Chaos test of checkpoint and resume (docs/reliability.md): N times (default 20), start a
# 4-rank training of the tiny model that saves every step or two, SIGKILL a random rank at a
# random moment, resume with --resume latest on a random world size from 1 to 4, and compare
# the finished run with an uninterrupted 4-rank run of the same command:
#   - metrics.jsonl: every step's loss; the steps trained on 4 ranks bitwise equal, the steps
#     after a resume on another world size within a relative 1e-5;
#   - the final weights (lora-dist export --format merged of the last checkpoint): bitwise equal
#     when the last resume ran on 4 ranks, else within a relative 1e-5 (max |Δ| / max |w|).
# Prints one line per iteration and "chaos: K/N passed"; exits non-zero unless every one passed.
#
#   tools/chaos.sh [N]            N iterations (or CHAOS_N), default 20
#   CHAOS_SEED=7                  the random choices (kill time, victim, world size, mode)
#   LORA_DIST=path                the binary (default .build/release/lora-dist, else debug)
#   CHAOS_DIR=dir                 where the runs go (default a fresh temporary folder, removed on success)
#   CHAOS_STEPS=100 CHAOS_SAVE_EVERY=2
# Run it under nice on a shared machine: it keeps 4 ranks busy.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${1:-${CHAOS_N:-20}}"
STEPS="${CHAOS_STEPS:-100}"
SAVE_EVERY="${CHAOS_SAVE_EVERY:-2}"
SEED=$(( ${CHAOS_SEED:-$$} % 32768 ))
RANDOM=$SEED
if [[ -z "${LORA_DIST:-}" ]]; then
  if [[ -x .build/release/lora-dist ]]; then LORA_DIST=.build/release/lora-dist; else LORA_DIST=.build/debug/lora-dist; fi
fi
[[ -x "$LORA_DIST" ]] || { echo "chaos: no lora-dist binary at $LORA_DIST (swift build -c release)" >&2; exit 2; }
LORA_DIST="$(cd "$(dirname "$LORA_DIST")" && pwd)/$(basename "$LORA_DIST")"
DIR="${CHAOS_DIR:-$(mktemp -d /tmp/lora-dist-chaos.XXXXXX)}"
mkdir -p "$DIR"
# OpenMPI's session directory of its own (no race with other users of /tmp/ompi.<host>)
export OMPI_MCA_orte_tmpdir_base="$DIR/ompi"
mkdir -p "$OMPI_MCA_orte_tmpdir_base"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SWIFT_BACKTRACE=enable=no
MPIRUN=(mpirun --oversubscribe -x OMPI_MCA_orte_tmpdir_base -x SWIFT_BACKTRACE)

python3 - "$DIR/corpus.txt" <<'EOF'
import random, sys
r = random.Random(11)
words = "the quick brown fox jumps over a lazy dog while every checkpoint keeps its promise to resume".split()
with open(sys.argv[1], "w") as f:
    for i in range(4000):
        f.write(" ".join(r.choice(words) for _ in range(10)) + f" ({i % 17}).\n")
EOF

args() {  # mode run-dir
  echo train --model tiny --mode "$1" --data "$DIR/corpus.txt" --steps "$STEPS" --batch 8 --seq 32 --lr 5e-3 --rank 4 \
       --warmup 3 --eval-every 1000 --eval-seqs 4 --save-every "$SAVE_EVERY" --keep-last 3 --quiet --run-dir "$2" \
       --collective-timeout 60
}

export_final() {  # run-dir out
  "$LORA_DIST" export --format merged --checkpoint "$1/checkpoints/latest" --out "$2" >/dev/null 2>"$2.err"
}

# The uninterrupted reference of each mode, made once.
reference() {  # mode
  local ref="$DIR/ref-$1"
  if [[ ! -f "$ref/done" ]]; then
    rm -rf "$ref"
    "${MPIRUN[@]}" -n 4 "$LORA_DIST" $(args "$1" "$ref") >"$ref.log" 2>&1 || { echo "chaos: the reference run failed: $ref.log" >&2; exit 2; }
    export_final "$ref" "$ref/export" || { echo "chaos: export of the reference failed: $(cat "$ref/export.err")" >&2; exit 2; }
    touch "$ref/done"
  fi
  echo "$ref"
}

steps_logged() { [[ -f "$1/metrics.jsonl" ]] && wc -l < "$1/metrics.jsonl" || echo 0; }

# pid of world rank $2 among the processes of run directory $1
rank_pid() {
  local p
  for p in $(pgrep -f -- "--run-dir $1 " || true); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$p"; return; fi
  done
}

compare() {  # reference run four_rank_steps_upto last_world_size -> prints a verdict, status 0 if passed
  python3 - "$@" <<'EOF'
import json, struct, sys
ref, run, upto, world = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def losses(d):
    return {o["step"]: o["loss"] for o in map(json.loads, open(d + "/metrics.jsonl"))}
def tensors(d):
    b = open(d + "/export/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); base = 8 + n; out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((e - s) // 4), b[base + s:base + e])
    return out
a, b = losses(ref), losses(run)
problems = []
if sorted(a) != sorted(b): problems.append("steps %s vs %s" % (sorted(b)[:3] + ["..."], sorted(a)[:3] + ["..."]))
worst_loss = 0.0
for s in sorted(set(a) & set(b)):
    if s <= upto or world == 4:
        if a[s] != b[s]: problems.append("step %d loss %r != %r (bitwise expected)" % (s, b[s], a[s]))
    else:
        rel = abs(a[s] - b[s]) / max(abs(a[s]), 1e-12); worst_loss = max(worst_loss, rel)
        if rel > 1e-5: problems.append("step %d loss %r vs %r (rel %.2e)" % (s, b[s], a[s], rel))
ta, tb = tensors(ref), tensors(run)
diff, scale, bitwise = 0.0, 0.0, True
for k in ta:
    x, y = ta[k], tb.get(k)
    if y is None or len(x) != len(y): problems.append("tensor %s missing or reshaped" % k); continue
    for u, v in zip(x, y):
        if u != v: bitwise = False; diff = max(diff, abs(u - v))
        scale = max(scale, abs(u))
rel = diff / max(scale, 1e-30)
if world == 4 and not bitwise: problems.append("weights differ (max rel %.2e), bitwise expected" % rel)
if rel > 1e-5: problems.append("weights max rel %.2e > 1e-5" % rel)
print(("ok" if not problems else "FAIL") + ": losses %s, weights %s" % (
    "bitwise" if worst_loss == 0 else "rel %.1e" % worst_loss, "bitwise" if bitwise else "rel %.1e" % rel)
    + ("" if not problems else "; " + "; ".join(problems[:3])))
sys.exit(1 if problems else 0)
EOF
}

passed=0
for i in $(seq 1 "$N"); do
  mode=$([[ $((RANDOM % 2)) == 0 ]] && echo lora || echo full)
  ref=$(reference "$mode")
  run="$DIR/run-$i"
  rm -rf "$run" "$run".*
  # 4 ranks in the background. The moment: once a random step (after the first save) is
  # logged, a random further 0-50 ms (mid-step, mid-save, mid-evaluation); then SIGKILL to a
  # random rank.
  # A run that ends before its kill lands is started again with new choices.
  for attempt in 1 2 3; do
    rm -rf "$run" "$run".*
    at=$(( SAVE_EVERY + 1 + RANDOM % (STEPS - SAVE_EVERY - 1) ))
    jitter=$(printf "0.%03d" $((RANDOM % 50)))
    "${MPIRUN[@]}" -n 4 "$LORA_DIST" $(args "$mode" "$run") >"$run.log" 2>&1 &
    job=$!
    while (( $(steps_logged "$run") < at )) && kill -0 "$job" 2>/dev/null; do sleep 0.005; done
    sleep "$jitter"
    victim=$((RANDOM % 4))
    pid=$(rank_pid "$run" "$victim")
    killed="no kill (the run had ended)"
    if [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null; then
      t0=$(date +%s.%N)
      wait "$job" || true
      killed="rank $victim killed after step $at + ${jitter}s, job ended in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-4)s"
      break
    fi
    wait "$job" || true
  done
  # the step of the checkpoint the resume starts from: the steps up to it ran on 4 ranks
  upto=$(sed -n 's/^step-0*\([0-9][0-9]*\)$/\1/p' "$run/checkpoints/latest" 2>/dev/null || echo 0)
  world=4
  if [[ "$killed" != no* ]] || [[ ! -f "$run/summary.json" ]]; then
    world=$((RANDOM % 4 + 1))
    if ! "${MPIRUN[@]}" -n "$world" "$LORA_DIST" $(args "$mode" "$run") --resume latest >"$run.resume.log" 2>&1; then
      echo "chaos $i/$N: FAIL: the resume on $world rank(s) failed ($run.resume.log): $(grep 'lora-dist: error' "$run.resume.log" | head -1)"
      continue
    fi
  fi
  if ! export_final "$run" "$run/export"; then
    echo "chaos $i/$N: FAIL: export failed: $(cat "$run/export.err")"; continue
  fi
  if verdict=$(compare "$ref" "$run" "$upto" "$world"); then passed=$((passed + 1)); rm -rf "$run" "$run".*; fi
  echo "chaos $i/$N: $mode, $killed, resumed from step $upto on $world rank(s): $verdict"
done
echo "chaos: $passed/$N passed ($STEPS steps of the tiny model, saves every $SAVE_EVERY, CHAOS_SEED=$SEED, runs in $DIR)"
if [[ $passed == "$N" && -z "${CHAOS_DIR:-}" ]]; then rm -rf "$DIR"; fi
[[ $passed == "$N" ]]
