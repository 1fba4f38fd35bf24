"""The satellite daemon (`core.Daemon`) and its parts: the turn state machine (`machine`),
what plays (`playback`), timers (`timers`), the audio exchanged with Home Assistant's pipeline
(`homeassistant`), turn reports (`report`) and the news observers get (`events`)."""
