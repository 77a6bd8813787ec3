#!/usr/bin/env bash
# Fuzzes the decoders of untrusted input with libFuzzer (the Swift toolchain's
# -sanitize=fuzzer) and the address sanitizer. Targets: Fuzz/<target>/main.swift, each
# compiled with Fuzz/Shared.swift against the LoraDist sources (built once, as a static
# library with -enable-testing, so a target can reach internal entry points the CLI uses).
#
#   tools/fuzz.sh                      build, then run every target 600 s, one after another
#   tools/fuzz.sh safetensors gguf     only these targets
#   tools/fuzz.sh --build              build only
#   tools/fuzz.sh --list               list the targets
#   FUZZ_TIME=60 tools/fuzz.sh         seconds per target (default 600)
#   FUZZ_OUT=.build-fuzz               build and work folder (default .build-fuzz, gitignored)
#   FUZZ_NICE=10                       niceness of the builds and fuzzers (absolute)
#   FUZZ_ARGS="-jobs=2 -workers=2"     extra libFuzzer flags
#
# A crash is written to $FUZZ_OUT/artifacts/<target>/crash-*; reproduce it with
#   $FUZZ_OUT/bin/fuzz-<target> <file>     and minimise with  ... -minimize_crash=1 -runs=10000 <file>
# Seeds are copied at run time from Tests/Fixtures (and made in code by each target: its
# fuzzSeeds()); the corpus grows in $FUZZ_OUT/corpus/<target> and is reused by the next run.
# Needs: the Swift toolchain, libopenmpi-dev, libopenblas-dev, libprotobuf-c-dev (tools/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${FUZZ_OUT:-.build-fuzz}
mkdir -p "$out"
out=$(cd "$out" && pwd)
time_per=${FUZZ_TIME:-600}
# FUZZ_NICE is the niceness the builds and fuzzers run at, whatever this script was started at
# (a `nice tools/fuzz.sh` would otherwise add its 10 to this one's and starve the fuzzer).
nice_level=$(( ${FUZZ_NICE:-10} > $(nice) ? ${FUZZ_NICE:-10} - $(nice) : 0 ))
extra=${FUZZ_ARGS:-}
export SWIFT_BACKTRACE=enable=no   # the backtracer stalls libFuzzer's crash handling
export LSAN_OPTIONS="suppressions=$root/tools/sanitizers/lsan.supp:print_suppressions=0"

targets_all=$(cd Fuzz && for d in */; do [[ -f "$d/main.swift" ]] && echo "${d%/}"; done)
build_only=0
targets=()
for a in "$@"; do
  case "$a" in
    --build) build_only=1 ;;
    --list) echo "$targets_all"; exit 0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) grep -qx "$a" <<<"$targets_all" || { echo "unknown target $a (known: $(echo $targets_all))" >&2; exit 2; }
       targets+=("$a") ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets <<<"$targets_all"

# --- build -------------------------------------------------------------------------------
san=(-sanitize=fuzzer,address)
swiftflags=(-O -g -swift-version 5 -module-cache-path "$out/module-cache")
mkdir -p "$out/cmods" "$out/c" "$out/lib" "$out/bin"

# A copy of the sources is built, so edits made meanwhile in the working tree do not break
# the build; the library is rebuilt when the copy changes.
rm -rf "$out/src.new"
mkdir -p "$out/src.new"
cp -r Sources/LoraDist Sources/CMPI Sources/CBLAS Sources/CProto "$out/src.new/"
lib="$out/lib/libLoraDist.a"
if [[ -f "$lib" && -d "$out/src" ]] && diff -rq "$out/src.new" "$out/src" >/dev/null; then
  rm -rf "$out/src.new"
else
  rm -rf "$out/src" "$lib"
  mv "$out/src.new" "$out/src"
fi
src="$out/src"

# The C shims as clang modules (SwiftPM makes these from each target's include/ folder).
cat >"$out/cmods/module.modulemap" <<EOF
module CMPI { umbrella "$src/CMPI/include" link "mpi" export * module * { export * } }
module CBLAS { umbrella "$src/CBLAS/include" link "openblas" export * module * { export * } }
module CProto { umbrella "$src/CProto/include" link "protobuf-c" export * module * { export * } }
EOF
cobjs=()
for c in "$src"/CMPI/*.c "$src"/CBLAS/*.c "$src"/CProto/*.c; do
  o="$out/c/$(basename "$(dirname "$c")")-$(basename "$c").o"
  if [[ ! -f "$o" || "$c" -nt "$o" ]]; then
    clang -c -O1 -g -fPIC -I "$(dirname "$c")/include" "$c" -o "$o"
  fi
  cobjs+=("$o")
done

if [[ ! -f "$lib" ]]; then
  mapfile -t lib_sources < <(find "$src/LoraDist" -name '*.swift' | sort)
  echo "building LoraDist for fuzzing (${#lib_sources[@]} files)..."
  nice -n "$nice_level" swiftc "${swiftflags[@]}" "${san[@]}" -parse-as-library -enable-testing -wmo \
    -module-name LoraDist -emit-library -static -o "$lib" -emit-module -emit-module-path "$out/lib/LoraDist.swiftmodule" \
    -I "$out/cmods" "${lib_sources[@]}"
fi

for t in "${targets[@]}"; do
  bin="$out/bin/fuzz-$t"
  if [[ ! -f "$bin" || "$lib" -nt "$bin" || "Fuzz/$t/main.swift" -nt "$bin" || Fuzz/Shared.swift -nt "$bin" ]]; then
    echo "building fuzz-$t..."
    nice -n "$nice_level" swiftc "${swiftflags[@]}" "${san[@]}" -parse-as-library -module-name "fuzz_$t" \
      -I "$out/lib" -I "$out/cmods" "Fuzz/$t/main.swift" Fuzz/Shared.swift \
      "$lib" "${cobjs[@]}" -lmpi -lopenblas -lprotobuf-c -o "$bin" 2> >(grep -v "Cannot export local symbol '__asan" >&2)
  fi
done
[[ $build_only == 1 ]] && { echo "built: $(for t in "${targets[@]}"; do printf '%s ' "$out/bin/fuzz-$t"; done)"; exit 0; }

# --- seeds -------------------------------------------------------------------------------
# Which fixtures seed which target (copied at run time; nothing is committed for fuzzing).
seed_files() {
  case "$1" in
    safetensors) find Tests/Fixtures -name '*.safetensors' ;;
    gguf) find Tests/Fixtures -name '*.gguf' ;;
    config) find Tests/Fixtures -name config.json ;;
    peft) find Tests/Fixtures -name adapter_config.json ;;
    tokenizer) find Tests/Fixtures -name tokenizer.json ;;
    tokenize) find Tests/Fixtures/jsonl/texts -name '*.txt' ;;
    jsonl) find Tests/Fixtures/jsonl -name '*.jsonl' ;;
    *) ;;
  esac
}

seed() {
  local t=$1 dir="$out/seeds/$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  local i=0
  while read -r f; do
    [[ -n "$f" ]] || continue
    cp "$f" "$dir/fixture-$i-$(basename "$f")"
    i=$((i + 1))
  done < <(seed_files "$t")
  # JSON Lines: also each of the first lines on its own (small inputs mutate faster)
  if [[ $t == jsonl ]]; then
    for f in Tests/Fixtures/jsonl/*.jsonl; do
      head -n 20 "$f" | split -l 1 - "$dir/line-$(basename "$f" .jsonl)-"
    done
  fi
  LORADIST_FUZZ_SEEDS="$dir" LORADIST_FIXTURES="$root/Tests/Fixtures" "$out/bin/fuzz-$t"
}

# A dictionary per target: JSON's tokens, and the string literals of the code that reads the
# format (its key names and values), made at run time so it follows the sources.
dict_sources() {
  case "$1" in
    config) echo Sources/LoraDist/Formats/HFConfig.swift Sources/LoraDist/Model/ModelConfig.swift ;;
    peft) echo Sources/LoraDist/Formats/HuggingFace.swift Sources/LoraDist/Model/LoRA.swift ;;
    tokenizer) echo Sources/LoraDist/Data/BPE/*.swift ;;
    gguf) echo Sources/LoraDist/Formats/GGUF.swift Sources/LoraDist/Formats/GGUFImport.swift \
               Sources/LoraDist/Data/BPE/BPELoader.swift Sources/LoraDist/Model/ModelSource.swift ;;
    manifest) echo Sources/LoraDist/Formats/HFConfig.swift Sources/LoraDist/Formats/HuggingFace.swift \
                   Sources/LoraDist/Train/RunRecords.swift ;;
    jsonl) echo ;;
    *) return 1 ;;
  esac
}

make_dict() {
  local t=$1 f="$out/dict/$1.dict" files
  files=$(dict_sources "$t") || return 1
  mkdir -p "$out/dict"
  {
    if [[ $t != gguf ]]; then
      printf '"%s"\n' '{' '}' '[' ']' ':' ',' 'true' 'false' 'null' '\"' '1e308' '-1' '0.5' 'NaN' 'Infinity' \
        '-Infinity' '\\u0000' '\\ud800' '\\ud83d\\ude42' '\\n' '1e15' '9007199254740993' '4.7'
    fi
    # shellcheck disable=SC2086
    [[ -z "$files" ]] || grep -oh '"[A-Za-z_][A-Za-z0-9_.-]\{1,48\}"' $files | sort -u | while read -r lit; do
      if [[ $t == gguf ]]; then echo "$lit"; else printf '"\\"%s\\""\n' "${lit:1:${#lit}-2}"; fi
    done
  } >"$f"
  echo "$f"
}

# --- run -----------------------------------------------------------------------------------
summary="$out/summary.txt"
: >"$summary"
for t in "${targets[@]}"; do
  seed "$t"
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t" "$out/logs"
  log="$out/logs/$t.log"
  dict=()
  if d=$(make_dict "$t"); then dict=(-dict="$d"); fi
  opts=()
  [[ -f "Fuzz/$t/options" ]] && read -r -a opts <"Fuzz/$t/options"
  echo "fuzzing $t for ${time_per}s (log $log)..."
  rc=0
  # shellcheck disable=SC2086
  LORADIST_FIXTURES="$root/Tests/Fixtures" nice -n "$nice_level" "$out/bin/fuzz-$t" \
    -max_total_time="$time_per" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t/" "${dict[@]}" "${opts[@]}" $extra "$out/corpus/$t" "$out/seeds/$t" >"$log" 2>&1 || rc=$?
  execs=$( (grep -o 'stat::number_of_executed_units: [0-9]*' "$log" || true) | tail -1 | awk '{print $2}')
  last=$( (grep -E '^#[0-9]+' "$log" || true) | tail -1)
  [[ -n "$execs" ]] || execs=$(grep -o '^#[0-9]*' <<<"$last" | tr -d '#')
  cov=$( (grep -o 'cov: [0-9]*' <<<"$last" || true) | awk '{print $2}')
  ft=$( (grep -o 'ft: [0-9]*' <<<"$last" || true) | awk '{print $2}')
  corp=$( (grep -o 'corp: [0-9]*/[0-9a-zA-Z]*' <<<"$last" || true) | awk '{print $2}')
  crashes=$(find "$out/artifacts/$t" -type f | wc -l)
  printf '%-12s rc=%-3s execs=%-10s cov=%-6s ft=%-6s corpus=%-12s artifacts=%s\n' \
    "$t" "$rc" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" | tee -a "$summary"
done
echo "summary in $summary"
