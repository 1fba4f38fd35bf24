#!/usr/bin/with-contenv bash
# The add-on's entry point: options -> config, MQTT from the Supervisor, model fetch, the
# daemon, and the Wyoming discovery (satellite/addon.py).
set -euo pipefail
exec /opt/lfm-satellite/bin/python -m satellite.addon /data
