#!/usr/bin/env bash
# Sets up what zoo needs on a fresh machine, and does nothing when it is already done.
#
# - .venv/ with the Python packages of tools/requirements.txt (torch 2.13.0 provides libtorch);
# - .venv/libtorch -> the torch package folder (include/ and lib/), which .cargo/config.toml
#   hands to the tch build as LIBTORCH, and which every binary finds at run time through an rpath.
#
# - espeak-ng (Debian's package), which `zoo tts` uses for phonemes and to render its training
#   corpus, and chromium, in which a test renders `zoo demo`'s report.html: installed with
#   apt-get when we are root and apt-get exists; otherwise a note says how. Without them zoo
#   still works (text-to-speech then reads characters instead of phonemes; the report test is
#   skipped), so a failed or impossible install never fails the set-up.
#
# Re-run it after editing tools/requirements.txt: the stamp file records what was installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/tools/requirements.txt"
stamp="$venv/.zoo-requirements.sha256"
python="${PYTHON:-python3}"

# Installs Debian package $1 (which provides command $2) where we can; never fails. Cheap
# when the command is already there. $3 says what zoo loses without it.
ensure_apt() {
  local pkg="$1" cmd="$2" without="$3"
  if command -v "$cmd" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "zoo setup: installing $pkg (apt-get)" >&2
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null \
      && command -v "$cmd" >/dev/null 2>&1; then
      echo "zoo setup: $pkg installed ($(command -v "$cmd"))" >&2
      return 0
    fi
    echo "zoo setup: warning: apt-get could not install $pkg; $without (try: apt-get install $pkg)" >&2
    return 0
  fi
  echo "zoo setup: note: $pkg is not installed, and this script installs it only as root with" \
    "apt-get; install it yourself (Debian/Ubuntu: sudo apt-get install $pkg; Fedora: sudo dnf" \
    "install $pkg; macOS: brew install $pkg); without it $without" >&2
  return 0
}

ensure_packages() {
  ensure_apt espeak-ng espeak-ng "zoo tts reads characters instead of phonemes and cannot render a corpus"
  ensure_apt chromium chromium "the test that renders zoo demo's report.html in a browser is skipped"
}

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && [ -e "$venv/libtorch/lib" ]; then
  ensure_packages
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
ensure_packages
echo "zoo setup: done (libtorch at $torch_dir)" >&2
