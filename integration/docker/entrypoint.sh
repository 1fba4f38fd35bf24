#!/bin/sh
# The container's entry point: on first start, a config in /config from the shipped example
# with the model kept under /data; then `lfm-satellite COMMAND...` with that config (by default
# `run --fetch`: the model is fetched on first start, then the daemon runs).
set -eu
config="${LFM_SATELLITE_CONFIG:-/config/config.yaml}"
if [ ! -f "$config" ]; then
    mkdir -p "$(dirname "$config")"
    sed "s|^  models_dir: null|  models_dir: /data/models|" \
        /usr/share/lfm-satellite/config.example.yaml > "$config"
    echo "container: wrote $config from the example; edit it (name, mqtt, audio devices) and restart"
fi
exec lfm-satellite -c "$config" "$@"
