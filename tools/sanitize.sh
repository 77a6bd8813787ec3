#!/usr/bin/env bash
# Runs the test suite under the sanitizers (issue 16; results in docs/reliability.md):
#
#   tools/sanitize.sh address     the fast tests (--skip CLI) built with -sanitize=address
#                                 (AddressSanitizer and LeakSanitizer), in .build-asan
#   tools/sanitize.sh thread      the tests that run threads (the replica threads of
#                                 Train/ReplicaThreads.swift in TrainingTests, the element-wise
#                                 workers of Tensor/Parallel.swift in ParallelKernelTests) built
#                                 with -sanitize=thread, in .build-tsan
#   tools/sanitize.sh             both, one after the other
#
#   SANITIZE_NICE=10     niceness of the builds and test runs (absolute; default 10)
#   SANITIZE_FILTER=...  a swift test --filter instead of the default set (thread), or in
#                        addition to --skip CLI (address)
#
# Each build is a cold debug build of the package with the sanitizer (10-25 min on 2 cores).
# Suppressions, each with its reason: tools/sanitizers/*.supp. Exit status: non-zero when a
# build fails, a test fails or a sanitizer reports (halt_on_error: the first report ends the run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# SANITIZE_NICE is absolute: whatever niceness this script was started at.
nice_level=$(( ${SANITIZE_NICE:-10} > $(nice) ? ${SANITIZE_NICE:-10} - $(nice) : 0 ))
which=("$@")
[[ ${#which[@]} -gt 0 ]] || which=(address thread)
export SWIFT_BACKTRACE=enable=no   # a sanitizer's report, not the backtracer's, is wanted

# The default world of one: one MPI singleton in the test process. Three threads per rank so
# the replicas run on threads of their own even on a 1-core machine (2 replicas + the caller).
export LORA_DIST_THREADS=${LORA_DIST_THREADS:-3}

status=0
for s in "${which[@]}"; do
  case "$s" in
    address)
      path=.build-asan
      filter=(--skip CLI)
      [[ -z ${SANITIZE_FILTER:-} ]] || filter+=(--filter "$SANITIZE_FILTER")
      # The slow unwinder: OpenMPI's libraries have no frame pointers, so the fast one stops
      # inside them and a leak's stack could not be matched to its suppression. Plug-ins stay
      # loaded so their frames have names.
      export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:fast_unwind_on_malloc=0:malloc_context_size=40:print_summary=1"
      export OMPI_MCA_mca_base_component_disable_dlclose=1
      export LSAN_OPTIONS="suppressions=$root/tools/sanitizers/lsan.supp:print_suppressions=0"
      ;;
    thread)
      path=.build-tsan
      filter=(--filter "${SANITIZE_FILTER:-TrainingTests|ParallelKernelTests}")
      export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tools/sanitizers/tsan.supp"
      ;;
    *) echo "unknown sanitizer $s (address or thread)" >&2; exit 2 ;;
  esac
  echo "== $s: building in $path ..."
  start=$(date +%s)
  nice -n "$nice_level" swift build --build-tests --sanitize="$s" --build-path "$path"
  echo "== $s: built in $(( $(date +%s) - start )) s; running swift test ${filter[*]}"
  start=$(date +%s)
  rc=0
  # swift test starts the test bundle at niceness 0 whatever its own is: renice the bundle.
  ( while sleep 2; do pgrep -f "^$root/$path/.*\.xctest" | xargs -r renice -n "${SANITIZE_NICE:-10}" -p >/dev/null 2>&1; done ) &
  renicer=$!
  nice -n "$nice_level" swift test --skip-build --sanitize="$s" --build-path "$path" "${filter[@]}" || rc=$?
  kill "$renicer"
  echo "== $s: tests exited $rc after $(( $(date +%s) - start )) s"
  [[ $rc == 0 ]] || status=$rc
done
exit $status
