#!/usr/bin/env bash
# Run the bridge with the config the command line finds ($OUTLOOK2MQTT_CONFIG, else
# ./config.toml, else /etc/outlook2mqtt/config.toml); without any, a self-contained local
# demo on loopback (Ctrl-C to stop). Installs only what that needs.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
"$repo/scripts/setup.sh" run
config="$("$repo/.venv/bin/python" -I -c 'import os
from bridge.config.load import config_search_path
print(config_search_path(None, os.environ))')"
if [ -n "${OUTLOOK2MQTT_CONFIG:-}" ] || [ -f "$config" ]; then
    exec "$repo/.venv/bin/outlook2mqtt" run -c "$config" "$@"
fi
echo "start: no config found (\$OUTLOOK2MQTT_CONFIG, ./config.toml," \
     "/etc/outlook2mqtt/config.toml): starting the local demo." \
     "Write a config with: $repo/.venv/bin/outlook2mqtt init" >&2
"$repo/scripts/setup.sh" demo
cd "$repo"
exec .venv/bin/python -m rig.demo "$@"
