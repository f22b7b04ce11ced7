#!/bin/bash
# Builds (once) the Debian 13 "trixie" chroot that holds a real GIMP 3 for the host tests.
# Debian 12 has no GIMP 3; trixie ships gimp 3.0.x with python3-gi and python3-zmq, which is all the plug-in needs;
# xvfb runs the full GIMP for the dialog test (the other tests use gimp-console, no display).
# Idempotent and cached: a finished chroot is marked by $ROOT/.layeredit-gimp-ready and is reused by CI.
# Usage: tests/hosts/gimp/setup.sh [ROOT]   (default: $LAYEREDIT_TRIXIE_ROOT or /var/cache/layeredit/trixie-root)
set -euo pipefail
ROOT=${1:-${LAYEREDIT_TRIXIE_ROOT:-/var/cache/layeredit/trixie-root}}
MARK="$ROOT/.layeredit-gimp-ready"
if [ -f "$MARK" ] && [ -x "$ROOT/usr/bin/gimp-console-3.0" ] && [ -x "$ROOT/usr/bin/xvfb-run" ]; then
  echo "gimp chroot already ready at $ROOT"; exit 0
fi
if [ "$(id -u)" != 0 ]; then echo "setup.sh needs root (debootstrap + chroot)" >&2; exit 1; fi
APT="apt-get -o DPkg::Lock::Timeout=900"
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive $APT install -y debootstrap
mkdir -p "$(dirname "$ROOT")"
[ -x "$ROOT/usr/bin/apt-get" ] || debootstrap --variant=minbase trixie "$ROOT"
chroot "$ROOT" $APT update
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive $APT install -y --no-install-recommends \
  gimp gir1.2-gimp-3.0 python3-gi python3-zmq python3-numpy xvfb xauth
chroot "$ROOT" apt-get clean
touch "$MARK"
echo "gimp chroot ready at $ROOT"
