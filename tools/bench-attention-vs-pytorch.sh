#!/usr/bin/env bash
# Attention alone against PyTorch's: forward + backward of causal grouped-query attention on
# random inputs, `lora-dist bench attention` against transformers' sdpa_attention_forward
# (tools/bench_attention_torch.py: SDPA as transformers trains SmolLM2 with
# attn_implementation="sdpa"), same shapes, threads, warm-up and timed steps.
#
# The machine is shared and noisy, so the two sides alternate, run by run
# (pytorch, lora-dist, pytorch, lora-dist, ...), ROUNDS times per shape; each side's best
# round (lowest median fwd+bwd ms) goes into the table, printed as markdown on stdout.
# Progress goes to stderr; every run's full output is kept under LOGDIR.
#
#   tools/bench-attention-vs-pytorch.sh
#   SHAPES="1x2048" ROUNDS=3 THREADS=2 tools/bench-attention-vs-pytorch.sh
#   SHAPES=1x256 ROUNDS=1 PYTHON=/root/.cache/bench-venv/bin/python tools/bench-attention-vs-pytorch.sh
#
# Environment: SHAPES ("4x512 1x2048 1x4096", batch x tokens), HEADS (9), KV_HEADS (3),
# HEAD_DIM (64) (SmolLM2-135M's), WINDOW (none: sliding window), THREADS (2: lora-dist's
# lanes and BLAS threads, torch.set_num_threads and OMP_NUM_THREADS), ROUNDS (2), STEPS (3,
# timed steps after one warm-up), LAYERS (1, layers per step), LOGDIR (a new temporary
# directory), RUN_TIMEOUT (900 s per run), PYTHON (python3, with torch and transformers),
# LORA_DIST (.build/release/lora-dist; built when missing), IDLE_WAIT (60) and IDLE_MAX (25)
# as in tools/bench-vs-pytorch.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

SHAPES="${SHAPES:-4x512 1x2048 1x4096}"
HEADS="${HEADS:-9}"
KV_HEADS="${KV_HEADS:-3}"
HEAD_DIM="${HEAD_DIM:-64}"
WINDOW="${WINDOW:-}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-2}"
STEPS="${STEPS:-3}"
LAYERS="${LAYERS:-1}"
RUN_TIMEOUT="${RUN_TIMEOUT:-900}"
IDLE_WAIT="${IDLE_WAIT:-60}"
IDLE_MAX="${IDLE_MAX:-25}"
PYTHON="${PYTHON:-python3}"
LORA_DIST="${LORA_DIST:-.build/release/lora-dist}"

for shape in $SHAPES; do
  [[ $shape =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || { echo "SHAPES takes batch x tokens, like 4x512, got $shape" >&2; exit 1; }
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive whole number, got $ROUNDS" >&2; exit 1; }

# No silent skip: without torch and transformers there is nothing to compare with.
if ! versions=$("$PYTHON" -c 'import torch, transformers.integrations.sdpa_attention, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")' 2>/dev/null); then
  echo "$PYTHON cannot import torch and transformers (transformers.integrations.sdpa_attention): set PYTHON to a Python that has them" >&2
  exit 1
fi

unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS GOTO_NUM_THREADS LORA_DIST_THREADS
export TRANSFORMERS_VERBOSITY=error

# need_lora_dist, cpu_busy, wait_idle (IDLE_WAIT, IDLE_MAX), run_logged
source tools/bench-common.sh
need_lora_dist attention

LOGDIR="${LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/bench-attention-vs-pytorch.XXXXXX")}"
mkdir -p "$LOGDIR"

# The flags both sides take.
shape_args() {  # batch seq
  local -a a=(--batch "$1" --seq "$2" --heads "$HEADS" --kv-heads "$KV_HEADS" --head-dim "$HEAD_DIM"
    --threads "$THREADS" --steps "$STEPS" --layers "$LAYERS" --json)
  if [[ -n $WINDOW ]]; then a+=(--window "$WINDOW"); fi
  echo "${a[@]}"
}

# One run of one side; prints its JSON line (the last stdout line starting with "{").
run_side() {  # side batch seq round
  local side=$1 batch=$2 seq=$3 round=$4
  local log="$LOGDIR/${side}-${batch}x${seq}-${round}.log"
  local -a args cmd
  read -r -a args <<< "$(shape_args "$batch" "$seq")"
  if [[ $side == pytorch ]]; then
    cmd=(env OMP_NUM_THREADS="$THREADS" "$PYTHON" tools/bench_attention_torch.py "${args[@]}")
  else
    cmd=(env OPENBLAS_NUM_THREADS="$THREADS" "$LORA_DIST" bench attention "${args[@]}")
  fi
  run_logged "$log" "${cmd[@]}"
  local json=$RUN_JSON busy=$RUN_BUSY t0=$RUN_T0
  printf '%-9s %sx%s round %s: %s ms fwd+bwd (%s s; CPUs %s %% busy before)\n' "$side" "$batch" "$seq" "$round" \
    "$("$PYTHON" -c 'import json,sys; print("%.1f" % json.loads(sys.argv[1])["total_ms"])' "$json")" \
    "$((SECONDS - t0))" "$busy" >&2
  echo "$json"
}

# One table row from the runs' JSON lines (tab-separated: side, JSON).
table_row() {  # batch seq resultsfile
  "$PYTHON" - "$@" <<'EOF'
import json, sys
batch, seq, path = sys.argv[1:4]
runs = {"pytorch": [], "lora-dist": []}
for line in open(path):
    side, js = line.rstrip("\n").split("\t", 1)
    runs[side].append(json.loads(js))
pt = min(runs["pytorch"], key=lambda r: r["total_ms"])
ld = min(runs["lora-dist"], key=lambda r: r["total_ms"])
def ms(r):
    return f"{r['total_ms']:.1f} ({r['forward_ms']:.1f} + {r['backward_ms']:.1f})"
def mem(side):  # highest peak RSS of the rounds, and its rise over the RSS before the tensors
    r = max(runs[side], key=lambda r: r["peak_rss_bytes"])
    return f"{r['peak_rss_bytes'] / 1e6:.0f} (+{max(0, r['peak_rss_bytes'] - r['start_rss_bytes']) / 1e6:.0f})"
cells = [f"{batch} × {seq}", ms(pt), ms(ld), f"{pt['total_ms'] / ld['total_ms']:.2f}×",
         f"{pt['gflops_useful']:.1f}", f"{ld['gflops_useful']:.1f}", f"{ld['gflops_as_run']:.1f}",
         mem("pytorch"), mem("lora-dist"), f"{ld['scratch_bytes'] / 1e6:.1f}", f"{pt['gqa']}, mask {pt['mask']}"]
print("| " + " | ".join(cells) + " |")
EOF
}

window_note=${WINDOW:+, sliding window $WINDOW}
echo "# lora-dist attention vs PyTorch SDPA, forward + backward"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1), $(nproc) logical CPUs available"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
echo "- $versions"
echo "- command: SHAPES=\"$SHAPES\" HEADS=$HEADS KV_HEADS=$KV_HEADS HEAD_DIM=$HEAD_DIM WINDOW=$WINDOW THREADS=$THREADS ROUNDS=$ROUNDS STEPS=$STEPS LAYERS=$LAYERS IDLE_WAIT=$IDLE_WAIT $0${*:+ $*}"
echo "- work: causal attention, $HEADS query heads over $KV_HEADS key/value heads, head dim $HEAD_DIM$window_note, fp32, $LAYERS layer(s) per step; $THREADS thread(s) each side; median of $STEPS steps after 1 warm-up; best of $ROUNDS alternating rounds per side"
echo "- PyTorch: \`OMP_NUM_THREADS=$THREADS $PYTHON tools/bench_attention_torch.py $(shape_args B T)\` (transformers' sdpa_attention_forward)"
echo "- lora-dist: \`OPENBLAS_NUM_THREADS=$THREADS $LORA_DIST bench attention $(shape_args B T)\`"
echo "- ms: median fwd+bwd per step (forward + backward); ratio: PyTorch ms / lora-dist ms (above 1: lora-dist faster); useful GFLOP/s: forward 2, backward 4 products over the visible keys; as run: lora-dist's sgemm FLOPs (its backward rebuilds Q·Kᵀ; a query block's keys from the first its first query sees to the block's end)"
echo "- peak MB: peak RSS (highest of the rounds), 10⁶ bytes, and in brackets its rise over the RSS before the inputs were made"
echo "- logs: $LOGDIR"
echo
echo "| batch × tokens | PyTorch ms | lora-dist ms | ratio | PyTorch useful GFLOP/s | lora-dist useful GFLOP/s | lora-dist as-run GFLOP/s | PyTorch peak MB | lora-dist peak MB | lora-dist scratch MB | PyTorch path |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"

start=$SECONDS
for shape in $SHAPES; do
  batch=${shape%x*}
  seq=${shape#*x}
  results="$LOGDIR/results-${batch}x${seq}.tsv"
  : > "$results"
  for ((round = 1; round <= ROUNDS; round++)); do
    for side in pytorch lora-dist; do
      json=$(run_side "$side" "$batch" "$seq" "$round")
      printf '%s\t%s\n' "$side" "$json" >> "$results"
    done
  done
  table_row "$batch" "$seq" "$results"
done
echo
echo "total time: $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s"
