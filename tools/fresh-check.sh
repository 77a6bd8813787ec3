#!/usr/bin/env bash
# The README's quick start as a new user meets it: clones this repository's committed HEAD
# into a temporary folder and runs both quick-start commands there,
#   tools/default-job.sh     then     tools/test.sh
# with
#   - HOME set to a new, empty folder, so the corpora, the SmolLM2 model, the plan
#     calibration, pip's cache and SwiftPM's caches (~/.cache/org.swift.swiftpm,
#     ~/.swiftpm) are all fetched or made anew;
#   - first on PATH, a fresh `python3 -m venv` (pip and setuptools as ensurepip gives them;
#     no `wheel`, none of tools/requirements-test.txt), so `python3`, `python` and `pip`
#     in the scripts are the venv's;
#   - no LORA_DIST_*, OPENBLAS_*, OMP_* or OMPI_* settings (OMPI_ALLOW_RUN_AS_ROOT* stay).
# Prints how long each command took; exits non-zero if either fails. Takes a while (two
# clean builds and the whole test suite): about 15-25 min on 2 cores. CI need not run it.
#
#   tools/fresh-check.sh                # logs and the clone are removed when both pass
#   KEEP=1 tools/fresh-check.sh         # keep them (kept anyway when a command fails)
#   SYSTEM_PYTHON=1 COMMANDS=tools/test.sh tools/fresh-check.sh
#                                       # no venv: python3 is /usr/bin/python3 (Debian's own,
#                                       # PEP 668 "externally managed"), pyenv off PATH
#
# Environment: PYTHON (the interpreter the venv is made from; default: the python3 on PATH,
# resolved to its real executable first), WORK (the temporary folder; default mktemp -d),
# COMMANDS (default "tools/default-job.sh tools/test.sh"), SYSTEM_PYTHON (above), CORETYPE
# (passed on as OPENBLAS_CORETYPE: the sgemm kernel of another CPU, e.g. Haswell for an AMD
# EPYC without AVX-512; default: OpenBLAS's own choice for this CPU).
#
# What stays from this machine, honestly: system packages (apt), the Swift toolchain, the
# system-wide configs /etc/gitconfig and /etc/pip.conf and PIP_* variables. On machines of
# this kind /etc/gitconfig redirects https://github.com/ to /opt/swift-packages (how SwiftPM
# gets swift-argument-parser without network) and /etc/pip.conf adds a local wheel folder;
# both apply to any user, so an empty HOME does not lose them. ~/.gitconfig is not copied:
# here it holds only user.name/email, which neither command needs. If a machine kept such a
# redirect in ~/.gitconfig, copy only that file into the new HOME (GITCONFIG_COPY=1 does).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py_src="${PYTHON:-python3}"
# pyenv's shims find their interpreter through $HOME/.pyenv: resolve before HOME changes.
py_real="$("$py_src" -c 'import sys; print(sys.executable)')"
work="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/fresh-check.XXXXXX")}"
mkdir -p "$work"
home="$work/home" clone="$work/lora-dist" venv="$work/venv" logs="$work/logs"
mkdir -p "$home" "$logs"
if [[ "${GITCONFIG_COPY:-0}" == 1 && -f "$HOME/.gitconfig" ]]; then cp "$HOME/.gitconfig" "$home/"; fi

echo "fresh check of $(git -C "$repo" rev-parse --short HEAD) ($(git -C "$repo" log -1 --format=%s | cut -c1-70))"
echo "work folder: $work"
git clone --quiet "$repo" "$clone"
if ! git -C "$repo" diff --quiet HEAD -- 2>/dev/null; then
  echo "note: $repo has uncommitted changes; the clone has the committed HEAD only"
fi

path="$venv/bin:$PATH"
if [[ "${SYSTEM_PYTHON:-0}" == 1 ]]; then
  # Debian's python3: every pyenv folder off PATH, /usr/bin's python3 the one found.
  path="$(tr ':' '\n' <<<"$PATH" | grep -v '/\.pyenv/' | paste -sd: -)"
  echo "no venv: python3 is $(PATH="$path" command -v python3) ($(PATH="$path" python3 --version 2>&1))"
else
  "$py_real" -m venv "$venv"
  pkgs="$("$venv/bin/python3" -m pip list --format=freeze 2>/dev/null | tr '\n' ' ')"
  echo "venv from $py_real: $pkgs"
  if "$venv/bin/python3" -c 'import wheel' 2>/dev/null; then echo "the venv has wheel: not a fresh one" >&2; exit 1; fi
fi

# The environment of the two commands: the machine's, less what a user would not have set.
run_env=(env)
for v in $(compgen -e); do
  case "$v" in
    OMPI_ALLOW_*) ;;
    LORA_DIST_* | OPENBLAS_* | GOTO_* | OMP_* | OMPI_* | PMIX_* | PMI_* | PYENV_VERSION | PYTHONPATH | XDG_* | VIRTUAL_ENV)
      run_env+=(-u "$v") ;;
  esac
done
run_env+=(HOME="$home" PATH="$path")
[[ -z "${CORETYPE:-}" ]] || run_env+=(OPENBLAS_CORETYPE="$CORETYPE")
[[ "${SYSTEM_PYTHON:-0}" == 1 ]] || run_env+=(VIRTUAL_ENV="$venv")
"${run_env[@]}" bash -c 'printf "python3 → %s, pip → %s, HOME=%s\n" "$(command -v python3)" "$(command -v pip)" "$HOME"'

fmt() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }
status=0
results=()
for cmd in ${COMMANDS:-tools/default-job.sh tools/test.sh}; do
  log="$logs/$(basename "$cmd" .sh).log"
  echo
  echo "=== $cmd (log: $log)"
  t0=$SECONDS
  if (cd "$clone" && "${run_env[@]}" "$cmd") > "$log" 2>&1; then
    r="PASS"
  else
    r="FAIL (exit $?)"; status=1
    tail -n 40 "$log"
  fi
  dt=$((SECONDS - t0))
  tail -n 3 "$log" | sed 's/^/  | /'
  results+=("$(printf '%-22s %-14s %s' "$cmd" "$r" "$(fmt "$dt")")")
done

echo
echo "=== fresh-check summary ($(nproc) CPUs, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)${CORETYPE:+, OPENBLAS_CORETYPE=$CORETYPE})"
printf '%s\n' "${results[@]}"
if [[ $status == 0 && "${KEEP:-0}" != 1 ]]; then
  rm -rf "$work"
else
  echo "kept: $work"
fi
exit $status
