#!/bin/bash
# Installs a real Krita (Debian 12: 5.1.5) and what the headless host tests need: Xvfb for the window (the
# plugin's docker and windowCreated hook need a real main window), and Debian's PyQt5/pyzmq, which Debian's
# Krita loads from the system Python. Idempotent: does nothing when all are already there.
# Usage (root): tests/hosts/krita/setup.sh
set -euo pipefail
if command -v krita >/dev/null && command -v xvfb-run >/dev/null && command -v xauth >/dev/null \
  && /usr/bin/python3 -c 'import zmq, PyQt5' 2>/dev/null; then
  echo "krita $(dpkg-query -W -f='${Version}' krita 2>/dev/null) and xvfb already installed"; exit 0
fi
if [ "$(id -u)" != 0 ]; then echo "setup.sh needs root (apt-get)" >&2; exit 1; fi
APT="apt-get -o DPkg::Lock::Timeout=900"
$APT update -q
DEBIAN_FRONTEND=noninteractive $APT install -y -q --no-install-recommends \
  krita xvfb xauth python3-pyqt5 python3-sip python3-zmq
echo "krita $(dpkg-query -W -f='${Version}' krita) ready"
