#!/usr/bin/env bash
# Sets up what zoo needs on a fresh machine, and does nothing when it is already done.
#
# - .venv/ with the Python packages of tools/requirements.txt (torch 2.13.0 provides libtorch);
# - .venv/libtorch -> the torch package folder (include/ and lib/), which .cargo/config.toml
#   hands to the tch build as LIBTORCH, and which every binary finds at run time through an rpath.
#
# Re-run it after editing tools/requirements.txt: the stamp file records what was installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/tools/requirements.txt"
stamp="$venv/.zoo-requirements.sha256"
python="${PYTHON:-python3}"

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && [ -e "$venv/libtorch/lib" ]; then
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
echo "zoo setup: done (libtorch at $torch_dir)" >&2
