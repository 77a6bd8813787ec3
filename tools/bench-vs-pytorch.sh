#!/usr/bin/env bash
# PyTorch and lora-dist side by side on the same training work: the `bench` config
# (hidden 512, 8 layers, 8 heads, intermediate 1376, vocabulary 258, untied head), fp32,
# global batch 8 × 256 tokens, AdamW, full fine-tuning and LoRA r=8 (alpha 16) on
# q,k,v,o and on all linear projections but lm_head. Run in 1 rank × 2 threads and
# 2 ranks × 1 thread (torchrun + DDP/gloo against mpirun).
#
# The machine is shared and noisy, so the two sides alternate, run by run
# (pytorch, lora-dist, pytorch, lora-dist, ...), ROUNDS times per configuration and
# mode; each side's best round (highest tokens/s) goes into the table, printed as
# markdown on stdout. Progress and per-run figures go to stderr; every run's full
# output is kept under LOGDIR.
#
#   tools/bench-vs-pytorch.sh                 # about 7 min on 2 quiet cores (ROUNDS=2)
#   ROUNDS=3 MODES="full" CONFIGS="1x2" tools/bench-vs-pytorch.sh
#   MODEL=smollm2 ROUNDS=1 tools/bench-vs-pytorch.sh         # SmolLM2-135M, 4 × 512, + QLoRA
#   MODEL=smollm2 BATCH=1 SEQ=2048 CONFIGS=1x2 MODES=lora-all RECOMPUTE="no yes" tools/bench-vs-pytorch.sh
#
# MODEL=smollm2 trains SmolLM2-135M-Instruct instead (vocabulary 49,152, tied head): the
# GGUF from tools/fetch-smollm2.sh (SMOLLM2_GGUF), dequantized to fp32 on both sides:
# lora-dist reads the GGUF itself (`bench step --model GGUF`), PyTorch loads the fp32
# Hugging Face directory tools/gguf_to_hf.py makes beside it (once). Mode qlora: lora-dist
# --mode qlora (NF4 base) against bitsandbytes' 4-bit NF4 (double quantization, CPU)
# with peft; LoRA on all linear projections on both sides. RECOMPUTE="no yes" runs each
# mode also with activation checkpointing: lora-dist --recompute against transformers'
# gradient checkpointing (the pair is compared with each other).
#
# Environment: MODEL (bench), BATCH and SEQ (8 × 256 for bench, 4 × 512 for smollm2),
# ROUNDS (2), STEPS (3, timed steps after one warm-up), CONFIGS ("1x2 2x1", ranks x
# threads), MODES ("full lora-attn lora-all", and qlora for smollm2), RECOMPUTE ("no";
# "yes", or "no yes" for both), LOGDIR (a new
# temporary directory), RUN_TIMEOUT (900 s per run), PYTHON (python3), TORCHRUN
# (torchrun), LORA_DIST (.build/release/lora-dist; built when missing), IDLE_WAIT (60:
# before each run, wait up to this many seconds for the CPUs to be less than IDLE_MAX
# (25) % busy with other work over 2 s; 0 to skip). Threads spinning in lockstep
# (OpenMP, OpenBLAS) slow down far more than in proportion when another process takes a
# core: a busy machine made single PyTorch steps 2-5× slower here.
# lora-dist's calibration (`lora-dist plan`) is redirected to LOGDIR, not overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${MODEL:-bench}"
case "$MODEL" in
  bench) BATCH="${BATCH:-8}" SEQ="${SEQ:-256}" MODES="${MODES:-full lora-attn lora-all}" ;;
  smollm2) BATCH="${BATCH:-4}" SEQ="${SEQ:-512}" MODES="${MODES:-full lora-attn lora-all qlora}" ;;
  *) echo "unknown MODEL $MODEL (bench, smollm2)" >&2; exit 1 ;;
esac
ROUNDS="${ROUNDS:-2}"
STEPS="${STEPS:-3}"
CONFIGS="${CONFIGS:-1x2 2x1}"
RECOMPUTE="${RECOMPUTE:-no}"
for mode in $MODES; do
  case "$mode" in
    full | lora-attn | lora-all) ;;
    qlora) [[ $MODEL == smollm2 ]] || { echo "mode qlora needs MODEL=smollm2 (a pretrained base to quantize)" >&2; exit 1; } ;;
    *) echo "unknown mode $mode (full, lora-attn, lora-all, qlora)" >&2; exit 1 ;;
  esac
done
for rc in $RECOMPUTE; do
  [[ $rc == no || $rc == yes ]] || { echo "RECOMPUTE takes no and/or yes, got $rc" >&2; exit 1; }
done
RUN_TIMEOUT="${RUN_TIMEOUT:-900}"
IDLE_WAIT="${IDLE_WAIT:-60}"
IDLE_MAX="${IDLE_MAX:-25}"
PYTHON="${PYTHON:-python3}"
TORCHRUN="${TORCHRUN:-torchrun}"
LORA_DIST="${LORA_DIST:-.build/release/lora-dist}"
LORA_RANK=8

# A clean environment: nothing from an enclosing mpirun, torchrun or thread setting
# (an mpirun started with a singleton's OMPI_*/PMIX_* variables exits 1 silently).
for v in $(compgen -e); do
  case "$v" in
    OMPI_ALLOW_*) ;;
    OMPI_* | PMIX_* | PMI_*) unset "$v" ;;
  esac
done
unset WORLD_SIZE RANK LOCAL_RANK LOCAL_WORLD_SIZE GROUP_RANK ROLE_RANK MASTER_ADDR MASTER_PORT \
  TORCHELASTIC_RUN_ID OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS GOTO_NUM_THREADS
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

# need_lora_dist, cpu_busy, wait_idle (IDLE_WAIT, IDLE_MAX), run_logged
source tools/bench-common.sh
need_lora_dist step

# The model each side loads: the bench config is built in place; SmolLM2 is the GGUF
# (lora-dist) and its fp32 Hugging Face conversion (PyTorch).
LD_MODEL=bench PT_MODEL=bench
if [[ $MODEL == smollm2 ]]; then
  SMOLLM2_GGUF="${SMOLLM2_GGUF:-$HOME/.cache/lora-dist/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
  [[ -f $SMOLLM2_GGUF ]] || SMOLLM2_GGUF=$(tools/fetch-smollm2.sh)
  LD_MODEL=$SMOLLM2_GGUF
  PT_MODEL=$("$PYTHON" tools/gguf_to_hf.py "$SMOLLM2_GGUF" "$(dirname "$SMOLLM2_GGUF")/hf-fp32" | tail -n 1)
fi

LOGDIR="${LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-pytorch.XXXXXX")}"
mkdir -p "$LOGDIR"
export LORA_DIST_CALIBRATION="$LOGDIR/calibration.json"

# A name suffix for runs with activation checkpointing (nothing without).
rc_suffix() { if [[ $1 == yes ]]; then echo "${2:--recompute}"; fi; }

# One run of one side; prints the JSON line (the last stdout line starting with "{").
run_side() {  # side ranks threads mode recompute(no|yes) round
  local side=$1 ranks=$2 threads=$3 mode=$4 rc=$5 round=$6
  local log="$LOGDIR/${side}-${ranks}x${threads}-${mode}$(rc_suffix "$rc")-${round}.log"
  local -a cmd
  if [[ $side == pytorch ]]; then
    local -a args=(tools/bench_torch.py --model "$PT_MODEL" --mode "$mode" --threads "$threads" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --json)
    if [[ $rc == yes ]]; then args+=(--checkpointing); fi
    if [[ $ranks -eq 1 ]]; then
      cmd=(env OMP_NUM_THREADS="$threads" "$PYTHON" "${args[@]}")
    else
      cmd=(env OMP_NUM_THREADS="$threads" "$TORCHRUN" --standalone --nproc-per-node "$ranks" "${args[@]}")
    fi
  else
    local -a args=(bench step --model "$LD_MODEL")
    case "$mode" in
      full) args+=(--mode full) ;;
      lora-attn) args+=(--mode lora --targets q_proj,k_proj,v_proj,o_proj --rank "$LORA_RANK") ;;
      lora-all) args+=(--mode lora --targets all-linear --rank "$LORA_RANK") ;;
      qlora) args+=(--mode qlora --targets all-linear --rank "$LORA_RANK") ;;
    esac
    args+=(--batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --threads "$threads" --json)
    if [[ $rc == yes ]]; then args+=(--recompute); fi
    if [[ $ranks -eq 1 ]]; then
      cmd=(env OPENBLAS_NUM_THREADS="$threads" "$LORA_DIST" "${args[@]}")
    else
      cmd=(mpirun --allow-run-as-root --oversubscribe -n "$ranks" --bind-to none
        -x OPENBLAS_NUM_THREADS="$threads" -x LORA_DIST_CALIBRATION "$LORA_DIST" "${args[@]}")
    fi
  fi
  run_logged "$log" "${cmd[@]}"
  local json=$RUN_JSON busy=$RUN_BUSY t0=$RUN_T0
  printf '%-9s %sx%s %-9s%s round %s: %s tokens/s (%s s; CPUs %s %% busy before)\n' "$side" "$ranks" "$threads" "$mode" \
    "$(rc_suffix "$rc" " recompute")" "$round" \
    "$("$PYTHON" -c 'import json,sys; print(round(json.loads(sys.argv[1])["tokens_per_s"]))' "$json")" \
    "$((SECONDS - t0))" "$busy" >&2
  echo "$json"
}

# One table row from the runs' JSON lines (tab-separated: side, JSON).
table_row() {  # ranks threads mode recompute resultsfile
  "$PYTHON" - "$@" <<'EOF'
import json, sys
ranks, threads, mode, rc, path = sys.argv[1:6]
mode = {"full": "full", "lora-attn": "LoRA q,k,v,o", "lora-all": "LoRA all-linear", "qlora": "QLoRA all-linear"}[mode]
if rc == "yes":
    mode += ", recompute / checkpointing"
runs = {"pytorch": [], "lora-dist": []}
for line in open(path):
    side, js = line.rstrip("\n").split("\t", 1)
    runs[side].append(json.loads(js))
pt = max(runs["pytorch"], key=lambda r: r["tokens_per_s"])
ld = max(runs["lora-dist"], key=lambda r: r["tokens_per_s"])
mb = lambda side: max(r["peak_rss_bytes"] for r in runs[side]) / 1e6
sg, tr = ld.get("sgemm_gflops"), ld.get("training_gflops")
share = ld.get("sgemm_ratio") or (tr / sg if sg and tr else None)
gf = [f"{sg:.1f}" if sg else "n/a", f"{tr:.1f}" if tr else "n/a", f"{100 * share:.0f} %" if share else "n/a"]
# The ratio lora-dist would reach if everything but its sgemm calls took no time: PyTorch's
# step time over lora-dist's sgemm time per step (rank 0's main thread, best round).
sgemm_ms = (ld.get("sections_ms") or {}).get("sgemm")
pt_step_ms = 1000 * ld["tokens_per_step"] / pt["tokens_per_s"] if ld.get("tokens_per_step") else None
gf.append(f"{pt_step_ms / sgemm_ms:.2f}×" if sgemm_ms and pt_step_ms else "n/a")
tok = lambda r: f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] >= 100 else f"{r['tokens_per_s']:.1f}"
cells = [f"{ranks} × {threads}", mode, tok(pt), tok(ld),
         f"{ld['tokens_per_s'] / pt['tokens_per_s']:.2f}×", f"{mb('pytorch'):.0f}", f"{mb('lora-dist'):.0f}",
         f"{mb('lora-dist') / mb('pytorch'):.2f}", *gf]
print("| " + " | ".join(cells) + " |")
EOF
}

versions=$("$PYTHON" -c 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")' 2>/dev/null || echo "torch: not importable")
if [[ " $MODES " == *" qlora "* ]]; then
  versions+=", $("$PYTHON" -c 'import bitsandbytes as b; print(f"bitsandbytes {b.__version__}")' 2>/dev/null | tail -n 1 || echo "bitsandbytes: not importable")"
fi
echo "# lora-dist vs PyTorch, training tokens/s"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- CPU: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1), $(nproc) logical CPUs available"
echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
echo "- $versions; $(mpirun --version 2>/dev/null | head -n 1)"
echo "- command: MODEL=$MODEL BATCH=$BATCH SEQ=$SEQ ROUNDS=$ROUNDS STEPS=$STEPS CONFIGS=\"$CONFIGS\" MODES=\"$MODES\" RECOMPUTE=\"$RECOMPUTE\" IDLE_WAIT=$IDLE_WAIT $0${*:+ $*}"
if [[ $MODEL == bench ]]; then
  echo "- work: bench config, fp32, global batch $BATCH × $SEQ tokens, AdamW, LoRA r=$LORA_RANK alpha $((2 * LORA_RANK)); median of $STEPS steps after 1 warm-up; best of $ROUNDS alternating rounds per side"
else
  echo "- work: SmolLM2-135M-Instruct ($SMOLLM2_GGUF, dequantized to fp32; PyTorch loads $PT_MODEL), global batch $BATCH × $SEQ tokens, AdamW, LoRA r=$LORA_RANK alpha $((2 * LORA_RANK)); QLoRA: NF4 base (bitsandbytes: double quantization, blocks of 64, fp32 compute); median of $STEPS steps after 1 warm-up; best of $ROUNDS alternating rounds per side"
fi
echo "- PyTorch: \`OMP_NUM_THREADS=T $PYTHON tools/bench_torch.py --model $PT_MODEL --mode M --threads T --batch $BATCH --seq $SEQ --steps $STEPS --json [--checkpointing]\` (1 rank), \`OMP_NUM_THREADS=1 $TORCHRUN --standalone --nproc-per-node 2 tools/bench_torch.py --threads 1 ...\` (2 ranks, DDP over gloo); SDPA attention"
echo "- lora-dist: \`OPENBLAS_NUM_THREADS=T $LORA_DIST bench step --model $LD_MODEL --mode full|lora|qlora [--targets ... --rank $LORA_RANK] --batch $BATCH --seq $SEQ --steps $STEPS --threads T --json [--recompute]\` (1 rank), under \`mpirun -n 2 --bind-to none -x OPENBLAS_NUM_THREADS=1\` (2 ranks)"
echo "- peak MB: peak RSS summed over ranks (highest of the rounds), 10⁶ bytes; sgemm and training GFLOP/s as lora-dist reports them in its best round"
echo "- ceiling: PyTorch's step time over the time lora-dist's sgemm calls take per step (bench step's sgemm section, best round): the ratio lora-dist would reach if nothing but its sgemm calls took time"
echo "- logs: $LOGDIR"
echo
echo "| ranks × threads | mode | PyTorch tok/s | lora-dist tok/s | ratio | PyTorch peak MB | lora-dist peak MB | peak lora-dist / PyTorch | sgemm GFLOP/s | lora-dist training GFLOP/s | training / sgemm | ceiling: PyTorch step / lora-dist sgemm |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"

start=$SECONDS
for config in $CONFIGS; do
  ranks=${config%x*}
  threads=${config#*x}
  for mode in $MODES; do
    for rc in $RECOMPUTE; do
      results="$LOGDIR/results-${ranks}x${threads}-${mode}$(rc_suffix "$rc").tsv"
      : > "$results"
      for ((round = 1; round <= ROUNDS; round++)); do
        for side in pytorch lora-dist; do
          json=$(run_side "$side" "$ranks" "$threads" "$mode" "$rc" "$round")
          printf '%s\t%s\n' "$side" "$json" >> "$results"
        done
      done
      table_row "$ranks" "$threads" "$mode" "$rc" "$results"
    done
  done
done
echo
echo "total time: $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s"
