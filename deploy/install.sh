#!/usr/bin/env bash
# Install firespotter as an onboard service on a Jetson (JetPack 5/6) or an x86 Debian/Ubuntu box.
#
#   sudo deploy/install.sh [--config drone-rtsp-zenoh] [--prefix /opt/firespotter] [--venv PATH]
#                          [--root DIR] [--dry-run]
#
# --config NAME  an example from deploy/configs/ as /etc/firespotter/config.toml (an existing one is kept)
# --venv PATH    use this prepared venv (e.g. one with JetPack's torch wheel) instead of creating PREFIX/.venv
# --root DIR     install into a staging root (an image being built, a test): files and directories only; the
#                steps that act on the running system (apt, users, systemctl) are listed and skipped
# --dry-run      print every step and change nothing
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

DRY_RUN=0
CONFIG=drone-rtsp-zenoh
PREFIX=/opt/firespotter
VENV=
ROOT=
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --config) CONFIG="$2"; shift ;;
    --prefix) PREFIX="$2"; shift ;;
    --venv) VENV="$2"; shift ;;
    --root) ROOT="$(realpath -m "$2")"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
CONFIG_FILE="deploy/configs/$CONFIG.toml"
if [ ! -f "$CONFIG_FILE" ]; then
  echo "install.sh: no config $CONFIG_FILE; choose one of: $(ls deploy/configs | sed 's/\.toml$//' | tr '\n' ' ')" >&2
  exit 2
fi

if grep -q '^\[listen\]' "$CONFIG_FILE"; then
  echo "install.sh: $CONFIG is a ground station config: on the ground laptop run firespotter listen -c $CONFIG_FILE" >&2
  exit 2
fi

step() { printf '+ %s\n' "$*"; [ "$DRY_RUN" = 1 ] || "$@"; }
note() { printf '# %s\n' "$*"; }
# Steps on the running system: skipped (and listed) when installing into a staging root.
system() { if [ -n "$ROOT" ]; then printf '# skipped under --root: %s\n' "$*"; else step "$@"; fi; }

if [ -f "$ROOT/etc/nv_tegra_release" ] || { [ -z "$ROOT" ] && [ -f /etc/nv_tegra_release ]; }; then
  PLATFORM=jetson
  note "platform: Jetson ($(head -n1 "$ROOT/etc/nv_tegra_release"))"
else
  PLATFORM=x86
  note "platform: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") on $(uname -m)"
fi
if [ "$DRY_RUN" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), pass --root DIR to stage the files, or --dry-run to see the steps" >&2
  exit 1
fi
if [ -n "$VENV" ] && [ ! -x "$VENV/bin/firespotter" ]; then
  echo "install.sh: --venv $VENV has no bin/firespotter; install firespotter into it first" >&2
  exit 2
fi
BIN="${VENV:-$PREFIX/.venv}/bin/firespotter"
OWNER=(-o firespotter -g firespotter)
[ -n "$ROOT" ] && OWNER=()  # the service user exists on the target, not necessarily here

PACKAGES="python3-venv gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
 gstreamer1.0-plugins-ugly gstreamer1.0-libav gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
 gir1.2-gst-plugins-bad-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp libgirepository1.0-dev libcairo2-dev pkg-config"
note "1. system packages"
system apt-get update -qq
# shellcheck disable=SC2086
system apt-get install -y --no-install-recommends $PACKAGES
[ "$PLATFORM" = jetson ] && note "   Jetson: nvarguscamerasrc, nvv4l2decoder and nvv4l2h264enc come with JetPack's nvidia-l4t-gstreamer"

note "2. service user and directories"
if [ -z "$ROOT" ] && id firespotter >/dev/null 2>&1; then note "   user firespotter exists"; else
  system useradd --system --home-dir /var/lib/firespotter --shell /usr/sbin/nologin --user-group firespotter
fi
system usermod -aG video firespotter
if [ -n "$ROOT" ] || getent group render >/dev/null; then system usermod -aG render firespotter; fi
step install -d -m 0755 "$ROOT$PREFIX" "$ROOT/etc/firespotter" "$ROOT/etc/systemd/system"
# systemd creates these itself (StateDirectory=...); made here so a staged image has them with the right modes
step install -d "${OWNER[@]}" -m 0750 "$ROOT/var/lib/firespotter" "$ROOT/var/cache/firespotter" "$ROOT/var/log/firespotter"

note "3. firespotter"
step install -d -m 0755 "$ROOT$PREFIX/src"
step cp -a "$REPO/firespotter" "$REPO/deploy" "$REPO/systemd" "$REPO/docs" "$REPO/pyproject.toml" "$REPO/README.md" \
  "$REPO/constraints.txt" "$ROOT$PREFIX/src/"
if [ -n "$VENV" ]; then
  note "   using the prepared venv $VENV ($("$VENV/bin/firespotter" --version))"
elif [ -n "$ROOT" ]; then
  note "   skipped under --root: creating $PREFIX/.venv (pass --venv PATH, or create it on the target:"
  note "   python3 -m venv $PREFIX/.venv && $PREFIX/.venv/bin/pip install -c $PREFIX/src/constraints.txt '$PREFIX/src[gst,mqtt,zenoh,mavlink]')"
else
  step python3 -m venv "$PREFIX/.venv"
  if [ "$PLATFORM" = jetson ]; then
    note "   Jetson: install JetPack's torch wheel into the venv first for CUDA (pip's torch is CPU-only on aarch64)"
    step "$PREFIX/.venv/bin/pip" install -q "$PREFIX/src[gst,mqtt,zenoh,mavlink]"
  else
    step "$PREFIX/.venv/bin/pip" install -q -c "$PREFIX/src/constraints.txt" "$PREFIX/src[gst,mqtt,zenoh,mavlink]"
  fi
fi

note "4. configuration"
if [ -f "$ROOT/etc/firespotter/config.toml" ]; then note "   /etc/firespotter/config.toml exists: kept"; else
  step install -m 0644 "$CONFIG_FILE" "$ROOT/etc/firespotter/config.toml"
fi
# The drone's signing key and the stations' public keys (auth_key, trusted_keys; docs/security.md):
# `firespotter keys new DRONE_ID --out /etc/firespotter/keys`, readable by the service user only.
step install -d "${OWNER[@]}" -m 0700 "$ROOT/etc/firespotter/keys"
# Secrets for the config's *_env keys (FIRESPOTTER_MQTT_PASSWORD=...): EnvironmentFile= of the units.
if [ -f "$ROOT/etc/firespotter/env" ]; then note "   /etc/firespotter/env exists: kept"; else
  step install -m 0600 /dev/null "$ROOT/etc/firespotter/env"
fi
CHECK_BIN="$ROOT$BIN"
[ -n "$VENV" ] && CHECK_BIN="$BIN"  # a prepared venv lives on this machine, not in the staging root
if [ -x "$CHECK_BIN" ]; then step "$CHECK_BIN" config check "$ROOT/etc/firespotter/config.toml"; fi
system "$BIN" doctor

note "5. systemd units"
for unit in firespotter.service firespotter@.service; do
  step install -m 0644 "systemd/$unit" "$ROOT/etc/systemd/system/$unit"
  if [ "$BIN" != /opt/firespotter/.venv/bin/firespotter ] || [ "$PREFIX" != /opt/firespotter ]; then
    step sed -i -e "s|/opt/firespotter/.venv/bin/firespotter|$BIN|g" -e "s|/opt/firespotter|$PREFIX|g" \
      "$ROOT/etc/systemd/system/$unit"
  fi
done
system systemctl daemon-reload
system systemctl enable --now firespotter.service
note "done: journalctl -u firespotter -f; curl http://127.0.0.1:9108/readyz when [metrics] is enabled"
