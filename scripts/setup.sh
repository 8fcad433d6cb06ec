#!/usr/bin/env bash
# Set-up shared by the README's two commands: creates .venv if missing, installs omni_lab into it, and
# makes sure a wgpu (Vulkan) adapter exists, installing Mesa's software driver where apt can.
# Sourced, so the caller gets OMNI_LAB_PY (the venv's python) and the venv on PATH.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "omni_lab needs Python 3.11 or newer as '$python' (set PYTHON=/path/to/python3.11)" >&2
    exit 1
  fi
  echo "[setup] creating $venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"

# Reinstall only when pyproject.toml changed since the last install.
stamp="$venv/.omni_lab_installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "[setup] installing omni_lab and its dependencies into $venv"
  "$py" -m pip install -q --upgrade pip
  # A pinned torch first: an open range would pull whatever build the index offers first, several GB
  # of CUDA libraries on Linux. 2.13.0 is the version the suite is run with.
  "$py" -c 'import torch' 2>/dev/null || "$py" -m pip install -q "torch==2.13.0"
  "$py" -m pip install -q -e "$root[dev]"
  touch "$stamp"
fi

# Mesa's Vulkan WSI layer complains about XDG_RUNTIME_DIR on headless machines; give it one.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="/tmp/omni-lab-xdg-$(id -u)"
  mkdir -p -m 700 "$XDG_RUNTIME_DIR"
fi

apt_usable() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [ "$(id -u)" = 0 ] && return 0
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null
}

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! "$py" -m omni_lab.cli doctor --quiet; then
  if apt_usable; then
    echo "[setup] no Vulkan adapter: installing Mesa's software driver (mesa-vulkan-drivers)"
    apt_install mesa-vulkan-drivers libvulkan1
    "$py" -m omni_lab.cli doctor --quiet || { echo "[setup] still no usable wgpu adapter after installing mesa-vulkan-drivers" >&2; exit 1; }
  else
    echo "[setup] no Vulkan adapter found and apt is not usable here." >&2
    echo "        Install a Vulkan driver: on Debian/Ubuntu 'sudo apt-get install mesa-vulkan-drivers libvulkan1'" >&2
    echo "        (the lavapipe software adapter), or your GPU vendor's Vulkan driver; then run this again." >&2
    exit 1
  fi
fi

export PATH="$venv/bin:$PATH"
OMNI_LAB_PY="$py"
