#!/usr/bin/env bash
# Idempotent setup: system packages (apt), .venv, pinned Python dependencies, firespotter in editable mode.
# Re-running when everything is in place takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
  gir1.2-gst-plugins-bad-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
  libgirepository1.0-dev libcairo2-dev pkg-config mosquitto mosquitto-clients
  chromium systemd
)
EXTRAS="${FIRESPOTTER_EXTRAS:-gst,torch,mqtt,zenoh,mavlink,ground,tak,auth,cluster,dev}"

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
else
  echo "setup: dpkg-query not found; this script knows Debian/Ubuntu only. Install the GStreamer, PyGObject build" >&2
  echo "       dependencies and mosquitto by hand: ${APT_PACKAGES[*]}" >&2
fi
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: run as root or with passwordless sudo, or install them first:" >&2
    echo "       sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing system packages: ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version 2>&1)"
  $PYTHON -m venv .venv
fi

# Reinstall only when what decides the environment changed.
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)-$EXTRAS
stamp=.venv/.firespotter-setup
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python dependencies [$EXTRAS] (first run takes about 2 minutes)"
  log=.venv/setup-pip.log
  if ! { .venv/bin/python -m pip install --upgrade pip &&
         .venv/bin/python -m pip install -c constraints.txt -e ".[$EXTRAS]"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "setup: pip install failed; full log in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "setup: ready (.venv/bin/firespotter $(.venv/bin/python -c 'import firespotter; print(firespotter.__version__)'))"
