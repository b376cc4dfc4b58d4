#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine (as root): the Debian packages the
# bridge's rig needs, a venv with the project and its test extras, and the Home
# Assistant the discovery tests run (its own venv, cached in ~/.cache/outlook2mqtt).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
[ -x /usr/lib/dovecot/submission ] || need+=(dovecot-submissiond)   # SMTP for the send tests
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # the unit file's tests
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi

# ~2 min and ~820 MB the first time; a no-op once cached (rig/homeassistant.py).
.venv/bin/python -m rig.homeassistant install
