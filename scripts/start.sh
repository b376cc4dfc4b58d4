#!/usr/bin/env bash
# Run the bridge: with a config (./config.toml or $OUTLOOK2MQTT_CONFIG) against your
# tenant; without one, a self-contained local demo on loopback (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
config="${OUTLOOK2MQTT_CONFIG:-config.toml}"
if [ -f "$config" ]; then
    exec .venv/bin/outlook2mqtt run -c "$config" "$@"
fi
echo "No $config found: starting the local demo (see README to configure your tenant)." >&2
exec .venv/bin/python -m rig.demo "$@"
