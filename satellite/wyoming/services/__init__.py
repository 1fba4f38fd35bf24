"""The Wyoming services endpoint (port 10701): speech-to-text, text-to-speech and conversation
from the local model, for any Home Assistant voice pipeline.

It is a separate server from the satellite's (Home Assistant loads no STT/TTS from an endpoint
whose `info` has a satellite) with its own zeroconf name. Home Assistant, as a client, opens a
new connection per request and may `describe` first (5 s timeout). Per connection:

- `describe` -> `info`; `ping` -> `pong` (any time);
- ASR: `transcribe{language}`, `audio-start`, `audio-chunk`..., `audio-stop` -> `transcript-start`,
  a `transcript-chunk` per generated piece of text, `transcript-stop`, `transcript{text}`. Audio
  of any rate, width and channel count is converted to 16 kHz mono and turned into log-mel
  frames as it arrives (`StreamingLogMel`); the encoder attends over the whole utterance and
  the features are normalised over it, so the rest waits for `audio-stop`, which hands the
  request to a worker at once;
- TTS: `synthesize{text, voice{name}}` -> `audio-start`, an `audio-chunk` per generated frame
  (80 ms), `audio-stop`. Streaming: `synthesize-start`, `synthesize-chunk`... (each complete
  sentence is spoken as soon as it is there, `audio-start/chunk/stop` per sentence), the whole
  text again in `synthesize` (Home Assistant's backward-compatible copy: ignored),
  `synthesize-stop` -> the rest, then `synthesize-stopped`. 16-bit mono at 24 kHz, or at the
  rate a request names in an extra `rate` field of its data;
- conversation: `transcript{text, context}` -> `handled{text, context}` (or `not-handled`);
  `context.conversation_id` keeps a multi-turn conversation with the model.

Requests run in a `WorkerPool` (`workers` threads sharing the one loaded model, a bounded
queue; a full queue is answered with `error` at once). A request has `request_timeout` seconds
(waiting included); a client that sends nothing for `client_timeout` (while no request of its
own runs) or does not take what is written for that long is disconnected. A client that goes
away mid-request has its job cancelled before the model's next step.

Bad input is answered with a Wyoming `error` whose text names the problem. A request that
ends in an `error` (refused, failed, timed out, the queue full) also closes its connection
once the `error` is written: Home Assistant's STT and TTS clients ignore `error` events and
wait for a transcript, audio or the connection's end (`../shared/FINDINGS.md` §2), so a
connection left open stalled its pipeline for 30 s. A malformed event that could be read
whole (bad JSON data, a missing or wrongly typed field) outside a request gets its `error`
and the connection goes on; one that leaves the stream untrustworthy (framing) closes it.
Nothing a client sends stops the server or touches other connections.

The package: `server` listens and owns the connections; `connection` is the handler of one
connection (its read loop, one request at a time, errors); a request's own work is in `asr`
(speech to text), `tts` (text to speech) and `conversation` (`handle`); `info` is what
`describe` gets; `common` holds what they share (the config, `BadRequest`, the `Link` a
request talks back through).
"""
