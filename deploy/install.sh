#!/usr/bin/env bash
# Install firespotter as an onboard service on a Jetson (JetPack 6) or an x86 Debian/Ubuntu box.
#
#   sudo deploy/install.sh [--config drone-rtsp-zenoh] [--prefix /opt/firespotter] [--dry-run]
#
# --dry-run prints every step it would take on this machine and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

DRY_RUN=0
CONFIG=drone-rtsp-zenoh
PREFIX=/opt/firespotter
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --config) CONFIG="$2"; shift ;;
    --prefix) PREFIX="$2"; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
CONFIG_FILE="deploy/configs/$CONFIG.toml"
if [ ! -f "$CONFIG_FILE" ]; then
  echo "install.sh: no config $CONFIG_FILE; choose one of: $(ls deploy/configs | sed 's/\.toml$//' | tr '\n' ' ')" >&2
  exit 2
fi

step() { printf '+ %s\n' "$*"; [ "$DRY_RUN" = 1 ] || "$@"; }
note() { printf '# %s\n' "$*"; }

if [ -f /etc/nv_tegra_release ]; then
  PLATFORM=jetson
  note "platform: Jetson ($(head -n1 /etc/nv_tegra_release))"
else
  PLATFORM=x86
  note "platform: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") on $(uname -m)"
fi
if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or pass --dry-run to see the steps" >&2
  exit 1
fi

PACKAGES="python3-venv gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
 gstreamer1.0-plugins-ugly gstreamer1.0-libav gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
 gir1.2-gst-plugins-bad-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp libgirepository1.0-dev libcairo2-dev pkg-config"
note "1. system packages"
step apt-get update -qq
# shellcheck disable=SC2086
step apt-get install -y --no-install-recommends $PACKAGES
[ "$PLATFORM" = jetson ] && note "   Jetson: nvarguscamerasrc, nvv4l2decoder and nvv4l2h264enc come with JetPack's nvidia-l4t-gstreamer"

note "2. service user and directories"
if id firespotter >/dev/null 2>&1; then note "   user firespotter exists"; else
  step useradd --system --home-dir /var/lib/firespotter --shell /usr/sbin/nologin --user-group firespotter
fi
step usermod -aG video firespotter
getent group render >/dev/null && step usermod -aG render firespotter
step install -d -m 0755 "$PREFIX" /etc/firespotter
step install -d -o firespotter -g firespotter -m 0750 /var/lib/firespotter /var/cache/firespotter /var/log/firespotter

note "3. firespotter in $PREFIX/.venv"
step cp -a "$REPO/." "$PREFIX/src"
step python3 -m venv "$PREFIX/.venv"
if [ "$PLATFORM" = jetson ]; then
  note "   Jetson: install JetPack's torch wheel into the venv first for CUDA (pip's torch is CPU-only on aarch64)"
  step "$PREFIX/.venv/bin/pip" install -q "$PREFIX/src[gst,mqtt,zenoh,mavlink]"
else
  step "$PREFIX/.venv/bin/pip" install -q -c "$PREFIX/src/constraints.txt" "$PREFIX/src[gst,mqtt,zenoh,mavlink]"
fi

note "4. configuration"
if [ -f /etc/firespotter/config.toml ]; then note "   /etc/firespotter/config.toml exists: kept"; else
  step install -m 0644 "$CONFIG_FILE" /etc/firespotter/config.toml
fi
step "$PREFIX/.venv/bin/firespotter" doctor

note "5. systemd units"
step install -m 0644 systemd/firespotter.service systemd/firespotter@.service /etc/systemd/system/
if [ "$PREFIX" != /opt/firespotter ]; then
  step sed -i "s|/opt/firespotter|$PREFIX|g" /etc/systemd/system/firespotter.service /etc/systemd/system/firespotter@.service
fi
step systemctl daemon-reload
step systemctl enable --now firespotter.service
note "done: journalctl -u firespotter -f; curl http://127.0.0.1:9108/readyz when [metrics] is enabled"
