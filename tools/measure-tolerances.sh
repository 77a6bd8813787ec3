#!/usr/bin/env bash
# Measures how far the tests' fixture comparisons move with the CPU: runs the suites that
# compare with fixtures made on another machine once per OpenBLAS kernel this CPU can run
# (OPENBLAS_CORETYPE) and per BLAS thread count (OPENBLAS_NUM_THREADS), with
# LORA_DIST_TEST_ERRORS set so every comparison appends the error it measured
# (recordFixtureError in Tests/LoraDistTests/Support/TestSupport.swift), and prints a markdown table:
# one row per check, the worst error per kernel/threads, and the worst of all. The
# tolerances beside those checks are set a margin above that worst (see their comments).
#
#   swift build --build-tests && tools/measure-tolerances.sh      # 10-40 s per column
#
# Environment: CORETYPES (default: every x86-64 kernel family this CPU's flags allow),
# THREADS ("1 2"), FILTER (the suites, a swift test --filter regex; default every suite that
# reads Tests/Fixtures), OUT (a new temp folder: one .tsv of raw errors and one .log per run).
# Test failures do not stop it: they are listed per column under the table (a comparison
# without recordFixtureError, such as an exact token match, shows up there only).
set -euo pipefail
cd "$(dirname "$0")/.."

flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { [[ $flags == *" $1 "* ]]; }
if [[ -z "${CORETYPES:-}" ]]; then
  # SSE-only families (older Intel and AMD, Atom), AVX, AVX2+FMA (Haswell and Zen kernels),
  # AVX-512. Bulldozer's family needs FMA4, which no recent CPU has.
  CORETYPES="Prescott Core2 Penryn Nehalem Atom Barcelona"
  has avx && CORETYPES+=" Sandybridge"
  has avx2 && has fma && CORETYPES+=" Haswell Zen"
  has avx512f && has avx512bw && has avx512vl && has avx512dq && CORETYPES+=" SkylakeX"
  has avx512_bf16 && CORETYPES+=" Cooperlake"
fi
THREADS="${THREADS:-1 2}"
FILTER="${FILTER:-ReferenceTests|ExportTests|ExportCLITests|GGUFTests|GGUFFamilyTests|FamilyTests|FamilyExportTests|NF4Tests|TokenizerTests|SafeTensorsTests}"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/measure-tolerances.XXXXXX")}"
mkdir -p "$OUT"
unset OMP_NUM_THREADS GOTO_NUM_THREADS
# OPENBLAS_L2_SIZE (set on some machines) changes OpenBLAS's blocking for some kernels: the
# environment's value, or unset, is used as it is; run the script both ways to cover both.
echo "kernels: $CORETYPES; threads: $THREADS; OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}; suites: $FILTER; raw results in $OUT" >&2

cols=()
for core in $CORETYPES; do
  for t in $THREADS; do
    col="$core/$t"
    tsv="$OUT/$core-$t.tsv" log="$OUT/$core-$t.log"
    rm -f "$tsv"
    # OpenBLAS says which kernel it loaded ("Core: Haswell") when OPENBLAS_VERBOSE=2: ask the
    # lora-dist binary (same library) whether it takes the one asked for on this CPU.
    got=$(OPENBLAS_VERBOSE=2 OPENBLAS_CORETYPE="$core" .build/debug/lora-dist --help 2>&1 | grep -m1 -o 'Core: [A-Za-z0-9]*' | cut -d' ' -f2 || true)
    if [[ ${got,,} != "${core,,}" ]]; then
      echo "$col: OpenBLAS loads '${got:-?}' instead; column skipped" >&2
      continue
    fi
    t0=$SECONDS
    LORA_DIST_TEST_ERRORS="$tsv" OPENBLAS_CORETYPE="$core" OPENBLAS_NUM_THREADS="$t" \
      swift test --skip-build --filter "$FILTER" > "$log" 2>&1 || true
    grep -oE '✘ Test ("[^"]*"|[^ ]+) (recorded|failed)' "$log" | sed -E "s/ (recorded|failed)\$//; s|^✘ Test |$col: |" \
      | sort -u > "$OUT/$core-$t.failed" || true
    echo "$col: $(wc -l < "$tsv") errors recorded, $(wc -l < "$OUT/$core-$t.failed") failing test(s), $((SECONDS - t0)) s" >&2
    cols+=("$col")
  done
done

python3 - "$OUT" "${cols[@]}" <<'EOF'
import sys, os, collections
out, cols = sys.argv[1], sys.argv[2:]
worst = collections.defaultdict(dict)
for col in cols:
    core, t = col.split("/")
    for line in open(os.path.join(out, f"{core}-{t}.tsv")):
        check, err = line.rstrip("\n").split("\t")
        worst[check][col] = max(worst[check].get(col, 0.0), float(err))
fmt = lambda x: "0" if x == 0 else f"{x:.2g}"
print("| check | " + " | ".join(cols) + " | worst |")
print("| --- |" + " --- |" * (len(cols) + 1))
for check in sorted(worst):
    row = worst[check]
    print(f"| {check} | " + " | ".join(fmt(row[c]) if c in row else "-" for c in cols) + f" | {fmt(max(row.values()))} |")
failed = [l.rstrip() for col in cols for l in open(os.path.join(out, col.replace("/", "-") + ".failed"))]
print()
print("failing tests: " + ("none" if not failed else ""))
for l in failed: print("- " + l)
EOF
