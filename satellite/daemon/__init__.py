"""The satellite daemon (`core.Daemon`) and its parts: the turn state machine (`machine`),
what plays (`playback`), timers (`timers`), the audio exchanged with Home Assistant's pipeline
(`homeassistant`) and how a turn's report is built (`report`). What it tells observers,
`TurnReport` among it, is `satellite.events`, outside the package: the MQTT bridge, the health
monitor and systemd's notifier read it without depending on the daemon."""
