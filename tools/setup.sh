#!/usr/bin/env bash
# Sets up what zoo needs on a fresh machine, and does nothing when it is already done.
#
# - .venv/ with the Python packages of tools/requirements.txt (torch 2.13.0 provides libtorch);
# - .venv/libtorch -> the torch package folder (include/ and lib/), which .cargo/config.toml
#   hands to the tch build as LIBTORCH, and which every binary finds at run time through an rpath.
#
# - espeak-ng (Debian's package), which `zoo tts` uses for phonemes and to render its training
#   corpus: installed with apt-get when we are root and apt-get exists; otherwise a note says how.
#   Without it zoo still works (text-to-speech then reads characters instead of phonemes), so a
#   failed or impossible install never fails the set-up.
#
# Re-run it after editing tools/requirements.txt: the stamp file records what was installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/tools/requirements.txt"
stamp="$venv/.zoo-requirements.sha256"
python="${PYTHON:-python3}"

# Installs espeak-ng where we can; never fails. Cheap when it is already there.
ensure_espeak() {
  if command -v espeak-ng >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "zoo setup: installing espeak-ng (apt-get)" >&2
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null \
      && command -v espeak-ng >/dev/null 2>&1; then
      echo "zoo setup: espeak-ng installed ($(command -v espeak-ng))" >&2
      return 0
    fi
    echo "zoo setup: warning: apt-get could not install espeak-ng; zoo tts will read characters" \
      "instead of phonemes and cannot render a corpus (try: apt-get install espeak-ng)" >&2
    return 0
  fi
  echo "zoo setup: note: espeak-ng is not installed, and this script installs it only as root" \
    "with apt-get; install it yourself (Debian/Ubuntu: sudo apt-get install espeak-ng; Fedora:" \
    "sudo dnf install espeak-ng; macOS: brew install espeak-ng) for phonemes and corpus rendering" \
    "in zoo tts; without it zoo tts reads characters" >&2
  return 0
}

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && [ -e "$venv/libtorch/lib" ]; then
  ensure_espeak
  exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: $python not found; install Python 3.10+ with venv and pip (e.g. apt-get install python3-venv)" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install the Rust toolchain (https://rustup.rs)" >&2
  exit 1
fi

echo "zoo setup: installing Python packages into .venv (torch 2.13.0 is about 4.7 GB, once)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$req"

torch_dir="$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
# A relative link, so the checkout can move.
ln -sfn "$(realpath --relative-to="$venv" "$torch_dir")" "$venv/libtorch"
echo "$want" > "$stamp"
ensure_espeak
echo "zoo setup: done (libtorch at $torch_dir)" >&2
