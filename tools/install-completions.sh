#!/usr/bin/env bash
# Installs lora-dist's shell completions for the current user. The scripts come from the binary
# itself (swift-argument-parser: `lora-dist --generate-completion-script bash|zsh|fish`), so they
# follow its subcommands and options; run this again after an upgrade.
#
#   tools/install-completions.sh              # bash, zsh and fish
#   tools/install-completions.sh bash         # only the shells named
#
# Where they go (the user's own completion folders; nothing needs root):
#   bash  ${XDG_DATA_HOME:-~/.local/share}/bash-completion/completions/lora-dist
#         (bash-completion loads it the first time lora-dist is completed)
#   zsh   ~/.zfunc/_lora-dist (needs `fpath=(~/.zfunc $fpath); autoload -U compinit; compinit` in ~/.zshrc)
#   fish  ${XDG_CONFIG_HOME:-~/.config}/fish/completions/lora-dist.fish
#
# LORA_DIST=path/to/lora-dist picks the binary; default: .build/release/lora-dist, else
# .build/debug/lora-dist, else lora-dist on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${LORA_DIST:-}"
if [[ -z "$bin" ]]; then
  for b in .build/release/lora-dist .build/debug/lora-dist; do [[ -x "$b" ]] && { bin="$b"; break; }; done
  [[ -n "$bin" ]] || bin=$(command -v lora-dist || true)
fi
[[ -n "$bin" && -x "$bin" ]] || { echo "no lora-dist binary: swift build -c release, or set LORA_DIST" >&2; exit 1; }
shells=("$@")
[[ ${#shells[@]} -gt 0 ]] || shells=(bash zsh fish)
for shell in "${shells[@]}"; do
  case "$shell" in
    bash) dest="${BASH_COMPLETION_USER_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/bash-completion}/completions/lora-dist" ;;
    zsh)  dest="$HOME/.zfunc/_lora-dist" ;;
    fish) dest="${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions/lora-dist.fish" ;;
    *) echo "unknown shell '$shell' (bash, zsh or fish)" >&2; exit 1 ;;
  esac
  mkdir -p "$(dirname "$dest")"
  "$bin" --generate-completion-script "$shell" > "$dest.tmp"
  mv "$dest.tmp" "$dest"
  echo "$shell: $dest"
done
if [[ " ${shells[*]} " == *" zsh "* ]] && ! grep -qs 'zfunc' "$HOME/.zshrc"; then
  echo "zsh: add to ~/.zshrc: fpath=(~/.zfunc \$fpath); autoload -U compinit; compinit"
fi
