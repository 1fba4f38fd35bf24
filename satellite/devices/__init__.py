"""Device control from the model's replies: the tool calls it writes (`toolcalls`), and the
allowlist, checks and spoken confirmations that decide what is sent (`control`). The
satellite owns it; commands go out through whatever publishes them (MQTT today)."""
