#!/usr/bin/env bash
# Idempotent set-up for a fresh CPU machine: Debian packages the tests need, the project's
# virtual environment (.venv) from the committed lock, and the reference oracle's separate
# environment (.venv-oracle, dev only). Re-running does nothing when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

say() { printf '[setup] %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------------
need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    say "missing Debian packages (install them as root): ${need_apt[*]}"
  fi
fi

# --- a venv built from a lock, rebuilt only when the lock changes ------------------------------
# $1 venv dir, then the lock files
build_venv() {
  local dir=$1; shift
  local stamp="$dir/.lock-sha256" want
  want=$(cat "$@" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  say "building $dir from $* (a few minutes the first time)"
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade "pip>=24" >/dev/null
  # --no-deps: the lock is complete; resolving again would pull CUDA wheels (torchaudio, triton,
  # torchvision, torchcodec) that break `import vllm` on the CPU.
  local lock
  for lock in "$@"; do
    # (the machine's local package index prints a warning per package it does not hold)
    "$dir/bin/python" -m pip install -q --no-deps -r "$lock" 2> >(grep -v "^WARNING: Location" >&2)
  done
  echo "$want" > "$stamp"
}

build_venv .venv requirements/cpu.lock requirements/dev.lock
build_venv .venv-oracle requirements/oracle.lock

# The project itself, editable; redone when pyproject.toml (entry points, packages) changes.
stamp=.venv/.project-sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing the project into .venv (editable)"
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
say "ready: $(.venv/bin/python -c 'import torch, vllm; print("torch", torch.__version__, "vllm", vllm.__version__)' 2>/dev/null)"
