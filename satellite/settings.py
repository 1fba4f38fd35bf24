"""The daemon's settings: one frozen dataclass per section of the YAML config file.

Each field has a docstring (the text under it); `satellite.example.yaml` documents every key
and a test keeps the two in step. Ranges and choices live in `field(metadata=...)` so the
loader in `satellite.config` can check them and name the key when a value is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

WAKE_WORDS = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft")
"""Wake-word models shipped by pymicro-wakeword."""
STOP_WORDS = ("stop",)
"""Stop-word models shipped with the satellite (`satellite/audio/wakewords/`)."""

Voice = Literal["us_female", "us_male", "uk_female", "uk_male"]
"""The model's voices (`model.voice`; the engine's prompts: `satellite.engine.template.VOICES`)."""
VOICE_NAMES: tuple[Voice, ...] = get_args(Voice)
Backbone = Literal["onnxruntime", "llamacpp"]
"""What runs the model's LFM2 backbone (`model.backbone`)."""
BACKBONES: tuple[Backbone, ...] = ("onnxruntime", "llamacpp")
EXECUTION_PROVIDERS = ("auto", "cpu", "cuda", "tensorrt", "coreml", "qnn", "openvino", "dml")
"""Names accepted in `model.providers`; `auto` picks the best available at start."""


def limits(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    """Field metadata: the inclusive range a number must lie in."""
    return {"min": low, "max": high}


@dataclass(frozen=True)
class SatelliteSettings:
    name: str = "LFM Satellite"
    """Name shown in Home Assistant; also the zeroconf instance name unless overridden.
    Keep it stable: Home Assistant builds its unique id from it."""

    area: str | None = None
    """Home Assistant area the satellite is in (e.g. "Kitchen"); none by default."""

    mode: Literal["local", "ha"] = "local"
    """`local`: wake, listen, answer and act on the device with the local model and tell Home
    Assistant what happened over MQTT. `ha`: stream audio to Home Assistant's pipeline like any
    Wyoming satellite."""

    state_file: str | None = None
    """File where live changes (mute, volume, wake word, sensitivity, voice, mode: the MQTT
    controls) are kept across restarts. Empty: `$STATE_DIRECTORY/state.json` under systemd,
    else `~/.local/state/lfm-satellite/state.json`."""

    conversation_timeout_seconds: float = field(default=300.0, metadata=limits(0.0, 86400.0))
    """`local` mode: the model remembers earlier turns of a conversation until it has been idle
    this long; 0 starts every turn afresh."""

    continue_conversation: Literal["question", "always", "never"] = "question"
    """`local` mode: after a reply, listen `follow_up_seconds` for more without the wake word
    (the listening tone plays; MQTT event `listening`): `question` when the reply ends with a
    question, `always` after every reply, `never`. The conversation goes on as after a wake
    word."""

    follow_up_seconds: float = field(default=5.0, metadata=limits(1.0, 60.0))
    """How long a follow-up waits for speech to start before the satellite goes back to
    waiting for the wake word."""


@dataclass(frozen=True)
class AudioSettings:
    backend: Literal["sounddevice", "file", "null"] = "sounddevice"
    """`sounddevice` (PortAudio microphone and speaker), `file` (WAV in, WAV out) or `null`
    (silence in, output discarded)."""

    input_device: str | int | None = None
    """Capture device, by name (a substring is enough) or index from `lfm-satellite devices`;
    the system default when empty."""

    output_device: str | int | None = None
    """Playback device, by name or index; the system default when empty."""

    output_latency_ms: int = field(default=100, metadata=limits(0, 2000))
    """How far ahead of the sound the speaker's audio goes to the sound system (`sounddevice`
    backend). The model runs in the same process and can hold it up for tens of milliseconds:
    a shorter latency than that clicks. 0: the sound system's own choice (PortAudio's
    "high", 35 ms on PulseAudio)."""

    input_rate: int = field(default=16000, metadata=limits(8000, 192000))
    """Capture sample rate in Hz; audio is converted to the model's 16 kHz mono."""

    output_rate: int = field(default=24000, metadata=limits(8000, 192000))
    """Playback sample rate in Hz; the model's 24 kHz output is resampled to it."""

    input_channels: int = field(default=1, metadata=limits(1, 8))
    """Capture channels; they are mixed down to mono."""

    chunk_ms: int = field(default=20, metadata=limits(5, 200))
    """Length of one capture chunk in milliseconds."""

    input_file: str | None = None
    """WAV file read as the microphone by the `file` backend (required there)."""

    output_file: str | None = None
    """WAV file written as the speaker by the `file` backend; output is discarded when empty."""

    realtime: bool = True
    """`file` backend: pace the input file at real time (true) or read it as fast as possible."""

    volume: float = field(default=1.0, metadata=limits(0.0, 1.0))
    """Playback volume at start, 0.0 to 1.0 (Home Assistant can change it over MQTT)."""

    barge_in: bool | Literal["voice"] = True
    """Keep listening for the wake word while the satellite speaks, and stop speaking when
    it is heard. `voice`: also stop when the user simply starts speaking over it (needs
    `audio.echo_cancellation: true`: the user is told from what is left of the satellite's
    own voice by level; `lfm-satellite bench echo`), and take what they say as the next
    question. When false the microphone is gated during playback."""

    echo_cancellation: bool = True
    """Take the satellite's own sound (replies, announcements, chimes) out of the microphone,
    with what the speaker plays as the reference: WebRTC's canceller for the end-of-speech
    model, the stop word and barge-in by voice, SpeexDSP's linear one for the wake word (it
    keeps the user's voice whole), and a check that a wake word heard is not one the
    satellite itself said. In scripted rooms the wake word said over a reply was heard 9
    times in 9 with it, 3 without, and an announcement saying the wake word woke it in none
    (8 without). About 0.2 ms of CPU per 10 ms of audio (`lfm-satellite bench echo`). Needs
    `libspeexdsp1`. Turn it off only where the microphone cannot hear the speaker."""

    noise_suppression: int = field(default=2, metadata=limits(0, 4))
    """WebRTC noise suppression on the microphone before the wake word and end-of-speech
    models hear it: 0 (off) to 4 (strongest). It takes out steady noise: with a fan 5 dB
    under the user the wake word was heard 9 times in 12 at level 2 and once without, the
    end of speech found 12 times and 7. A TV's talk and music are not steady: over a TV it
    changes nothing (the endpointer's `vad.voice_gate_db` is what helps there). About 0.02 ms
    of CPU per 10 ms (docs/PERFORMANCE.md, `lfm-satellite bench noise`)."""

    auto_gain: int = field(default=0, metadata=limits(0, 31))
    """WebRTC automatic gain on the microphone, aiming for this many dB below full scale
    (1 to 31; 0: off). For a far-away user or a quiet microphone: with the user at -60 dBFS
    the end of speech was found 12 times in 12 at 5 and once without. Off by default: it
    also turns the satellite's own voice and the room up, which is not yet measured."""

    awake_sound: str | None = None
    """WAV file played when the wake word is detected; none by default."""

    done_sound: str | None = None
    """WAV file played when the user has finished speaking; none by default."""

    listen_sound: str | None = None
    """WAV file played when the satellite listens without the wake word (a follow-up, or the
    answer to a confirmation question); a built-in two-note tone when empty."""

    timer_sound: str | None = None
    """WAV file rung when a Home Assistant timer finishes; a built-in chime when empty."""

    timer_ring_seconds: float = field(default=300.0, metadata=limits(1.0, 3600.0))
    """A finished timer rings until the wake word is heard, Home Assistant cancels it, or
    this long."""


@dataclass(frozen=True)
class WakeSettings:
    model: str = "okay_nabu"
    """Wake word: one of okay_nabu, hey_jarvis, alexa, hey_mycroft (shipped with
    pymicro-wakeword), or the path of a microWakeWord model's .json file."""

    sensitivity: float = field(default=0.5, metadata=limits(0.0, 1.0))
    """0.0 to 1.0; higher fires more readily (more false wakes), lower needs a clearer phrase."""

    refractory_seconds: float = field(default=2.0, metadata=limits(0.0, 60.0))
    """After a detection, further detections are ignored for this many seconds."""

    stop_model: str = "stop"
    """Stop word: heard while the satellite speaks, plays what Home Assistant sends or rings a
    timer, it ends that without starting a turn. `stop` (shipped with the satellite), the path
    of a microWakeWord model's .json file, or "" for none. It listens with `audio.barge_in`
    off too."""

    stop_sensitivity: float = field(default=0.5, metadata=limits(0.0, 1.0))
    """0.0 to 1.0, as `sensitivity`, for the stop word."""


@dataclass(frozen=True)
class VadSettings:
    threshold: float = field(default=0.5, metadata=limits(0.0, 1.0))
    """Speech probability above which a chunk counts as speech."""

    trailing_silence_ms: int = field(default=700, metadata=limits(100, 5000))
    """Silence after speech that ends the utterance."""

    max_utterance_seconds: float = field(default=15.0, metadata=limits(1.0, 120.0))
    """An utterance is closed after this long even if the user keeps talking."""

    preroll_ms: int = field(default=300, metadata=limits(0, 2000))
    """Audio kept from before the start of speech so the first syllable is not lost."""

    min_speech_ms: int = field(default=150, metadata=limits(0, 5000))
    """Shorter bursts of speech are ignored as noise."""

    voice_gate_db: float = field(default=6.0, metadata=limits(0.0, 40.0))
    """In a room that was loud before the user spoke, a frame counts as their speech only
    when it is at most this many dB below their voice (the level of their louder speech so
    far) or clearly louder than the room was, so that a TV or people talking further away do
    not hold the utterance open: over a TV 10 dB under the user the end of speech was found
    in 10 of 12 commands with it and 0 of 12 without (`lfm-satellite bench noise`). In a
    quiet room it changes nothing. 0: off."""

    speculative: bool = True
    """`local` mode: when the user pauses (100 ms), read their speech into the model and begin
    the reply (up to its first audio) during the trailing silence, and throw that work away if
    they go on speaking. A short command is answered as soon as the end of speech is decided;
    the cost is some wasted work on mid-sentence pauses."""

    no_speech_seconds: float = field(default=8.0, metadata=limits(1.0, 60.0))
    """After the wake word, give up listening when no speech starts within this long."""


@dataclass(frozen=True)
class ModelSettings:
    name: str = "LiquidAI/LFM2.5-Audio-1.5B-ONNX"
    """Model from the catalog (`lfm-satellite model list`); used to find or fetch the model
    when `directory` is empty."""

    directory: str | None = None
    """Model directory to load (one with a manifest, see `lfm-satellite model verify`).
    Empty: `<models_dir>/<name>/<variant>`."""

    models_dir: str | None = None
    """Where fetched models are kept. Empty: `$STATE_DIRECTORY/models` under systemd, else
    `~/.local/share/lfm-satellite/models`."""

    variant: Literal["q4", "q8", "fp16", "fp32"] = "q4"
    """Weights precision: q4 (4-bit, smallest and fastest on CPU), q8, fp16 or fp32."""

    providers: list[str] = field(
        default_factory=lambda: ["auto"], metadata={"each": EXECUTION_PROVIDERS}
    )
    """ONNX Runtime execution providers in order of preference: auto, cpu, cuda, tensorrt,
    coreml, qnn, openvino, dml. `auto` picks the best one available and logs its choice."""

    threads: int = field(default=0, metadata=limits(0, 256))
    """Intra-op threads for ONNX Runtime; 0 lets it use every core."""

    shared_thread_pool: bool = True
    """All of the model's graphs run on one ONNX Runtime thread pool instead of one pool each
    (faster: a pool per graph leaves threads competing for the cores while the graphs take
    turns). Turn off only to compare. Not used with `backbone: llamacpp`, whose own threads
    would compete with the pool's."""

    backbone: Backbone = "onnxruntime"
    """What runs the model's LFM2 backbone: `onnxruntime` (the model directory's decoder graph)
    or `llamacpp` (a GGUF file of the backbone, `backbone_gguf`, through llama-cpp-python; on
    some CPUs faster, see docs/PERFORMANCE.md). Needs `pip install 'lfm-satellite[llamacpp]'`."""

    backbone_gguf: str | None = None
    """The backbone's GGUF file for `backbone: llamacpp` (architecture lfm2, e.g. from
    LiquidAI's GGUF repository of the same model). Empty: the one `.gguf` file in the model
    directory."""

    voice: Voice = "us_female"
    """Voice of spoken replies and of Wyoming text-to-speech by default."""


@dataclass(frozen=True)
class WyomingSettings:
    satellite_host: str = "0.0.0.0"
    """Address the Wyoming satellite server listens on (Home Assistant connects to it)."""

    satellite_port: int = field(default=10700, metadata=limits(1, 65535))
    """Port of the Wyoming satellite server."""

    services_enabled: bool = True
    """Also serve speech-to-text, text-to-speech and conversation from the local model to
    Home Assistant, on their own port."""

    services_host: str = "0.0.0.0"
    """Address the Wyoming services server listens on."""

    services_port: int = field(default=10701, metadata=limits(1, 65535))
    """Port of the Wyoming services server; it must differ from `satellite_port`."""

    zeroconf: bool = True
    """Announce both servers with zeroconf (`_wyoming._tcp.local.`) so Home Assistant finds
    them."""

    zeroconf_name: str | None = None
    """Zeroconf instance name of the satellite; empty: `satellite.name`. Keep it stable."""

    services_zeroconf_name: str | None = None
    """Zeroconf instance name of the services server; empty: the satellite's zeroconf name
    followed by " Services". Keep it stable: Home Assistant builds the services' unique id
    from it."""

    services_workers: int = field(default=1, metadata=limits(1, 16))
    """Requests the services run at once (engine worker threads sharing the one loaded model);
    each costs its own caches and CPU time."""

    services_queue: int = field(default=4, metadata=limits(0, 256))
    """Requests that may wait for a free worker; beyond that a request is refused at once with
    a Wyoming `error`."""

    services_request_timeout_seconds: float = field(default=120.0, metadata=limits(1.0, 3600.0))
    """Longest a request may take, waiting for a worker included; then it is stopped and the
    client gets an `error`."""

    services_client_timeout_seconds: float = field(default=30.0, metadata=limits(1.0, 3600.0))
    """A client that sends nothing for this long (while no request of its own is running), or
    does not take what is written to it for this long, is disconnected."""

    services_max_text: int = field(default=5000, metadata=limits(1, 1_000_000))
    """Longest text in characters for text-to-speech (one request) and conversation."""

    services_max_audio_seconds: float = field(default=30.0, metadata=limits(1.0, 600.0))
    """Longest audio a speech-to-text request may send."""


@dataclass(frozen=True)
class MqttSettings:
    enabled: bool = True
    """Connect to an MQTT broker for Home Assistant discovery, controls, events and health.
    The satellite keeps working while the broker is away."""

    host: str = "localhost"
    """Broker host name or address."""

    port: int = field(default=1883, metadata=limits(1, 65535))
    """Broker port (usually 1883, or 8883 with TLS)."""

    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT protocol version: 5 or 3.1.1."""

    tls: bool = False
    """Connect with TLS."""

    ca_file: str | None = None
    """CA certificate (PEM) to check the broker with; the system's CAs when empty."""

    cert_file: str | None = None
    """Client certificate (PEM) for brokers that ask for one; needs `key_file`."""

    key_file: str | None = None
    """Private key (PEM) of `cert_file`."""

    tls_insecure: bool = False
    """Skip the check that the broker's certificate matches its host name. Unsafe."""

    username: str | None = None
    """User name for the broker; anonymous when empty."""

    password: str | None = field(default=None, metadata={"secret": True})
    """Password for the broker. Prefer `password_file` and keep this file private."""

    password_file: str | None = None
    """File whose first line is the broker password (instead of `password`)."""

    client_id: str | None = None
    """MQTT client id; empty: derived from the satellite name plus a random suffix."""

    base_topic: str | None = None
    """Topic prefix of this satellite's state, command, event and health topics; empty:
    `lfm_satellite/<name as slug>`."""

    discovery_prefix: str = "homeassistant"
    """Home Assistant's MQTT discovery prefix."""

    keepalive: int = field(default=60, metadata=limits(5, 3600))
    """Seconds between keep-alive pings to the broker."""

    outbox_size: int = field(default=1000, metadata=limits(10, 1000000))
    """Messages kept while the broker is away; beyond this the oldest are dropped (and
    counted in the health report)."""


@dataclass(frozen=True)
class DeviceControlSettings:
    enabled: bool = False
    """Let the model control devices: tool calls in its replies are checked against the
    allowlist and published to the devices' MQTT command topics."""

    allowlist_file: str | None = None
    """YAML file listing the entities the model may control, their command topics and the
    payload of each allowed action (see `devices.example.yaml`). Required when enabled."""

    confirm_seconds: float = field(default=15.0, metadata=limits(1.0, 300.0))
    """How long a sensitive action (locks, alarm panels, garage doors) waits for a spoken
    yes before it is dropped."""


@dataclass(frozen=True)
class HealthSettings:
    interval_seconds: float = field(default=30.0, metadata=limits(1.0, 86400.0))
    """How often the health report is published."""

    window: int = field(default=100, metadata=limits(10, 100000))
    """Number of recent turns the latency percentiles are taken over."""

    ttfa_alert_ms: float = field(default=800.0, metadata=limits(1.0, 600000.0))
    """Raise the latency alert when the p95 time to first audio is above this."""

    turn_latency_alert_ms: float = field(default=8000.0, metadata=limits(1.0, 600000.0))
    """Raise the latency alert when the p95 turn latency is above this."""

    jitter_alert_ms: float = field(default=30.0, metadata=limits(0.1, 10000.0))
    """Raise the jitter alert when input or playback jitter is above this."""

    alert_clear_ratio: float = field(default=0.8, metadata=limits(0.1, 1.0))
    """Hysteresis: an alert clears when its value falls below threshold times this ratio."""


@dataclass(frozen=True)
class SafetySettings:
    text_filter: bool = True
    """Check a reply's text before its audio plays: each stretch of audio waits until the text
    written before it has passed every rule (blocked terms, the policy file's rules); a reply
    that breaks one is stopped there and the refusal is said instead."""

    blocked_terms: list[str] = field(default_factory=list)
    """Words or phrases that must never be spoken (case-insensitive, whole words): a reply
    whose text contains one is stopped there."""

    policy_file: str | None = None
    """YAML file of further rules: blocked terms, regular expressions, personal data (phone
    numbers, e-mail addresses, card numbers, street addresses), allow-only topics, an external
    command or a Python plugin (see `lfm-satellite safety check --help`). Read again when it
    changes, at the start of a reply. None by default."""

    refusal: str = "Sorry, I can't say that."
    """Said in the satellite's voice instead of a reply that was stopped by a rule; empty: the
    reply just stops."""

    audio_integrity: bool = True
    """Check generated audio before playback: invalid samples are zeroed, samples beyond full
    scale clipped, long silences counted, and each frame checked for clicks, DC offset,
    loudness jumps, dropouts, loops and a wrong sample rate or channel count; a reply that
    needed it raises the audio alert."""

    audio_action: Literal["mute", "drop", "report"] = "mute"
    """What a frame that fails the integrity check does: `mute` silences the rest of the
    reply, `drop` only that frame (replaced by silence with a short fade), `report` only
    counts it."""

    max_reply_seconds: float = field(default=30.0, metadata=limits(1.0, 600.0))
    """Longest spoken reply; generation stops there."""


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severe level that is logged."""

    format: Literal["text", "json"] = "text"
    """`text`: one readable line per event; `json`: one JSON object per line for machines."""

    file: str | None = None
    """Also append the log to this file; standard error only when empty."""


@dataclass(frozen=True)
class Settings:
    satellite: SatelliteSettings = field(default_factory=SatelliteSettings)
    """Who the satellite is and how it answers."""

    audio: AudioSettings = field(default_factory=AudioSettings)
    """Microphone and speaker."""

    wake: WakeSettings = field(default_factory=WakeSettings)
    """Wake word detection."""

    vad: VadSettings = field(default_factory=VadSettings)
    """Voice activity detection and end of speech."""

    model: ModelSettings = field(default_factory=ModelSettings)
    """The LFM2-Audio model and how it runs."""

    wyoming: WyomingSettings = field(default_factory=WyomingSettings)
    """Wyoming servers for Home Assistant."""

    mqtt: MqttSettings = field(default_factory=MqttSettings)
    """MQTT broker for discovery, controls, events and health."""

    device_control: DeviceControlSettings = field(default_factory=DeviceControlSettings)
    """Devices the model may control through MQTT."""

    health: HealthSettings = field(default_factory=HealthSettings)
    """Latency and jitter health reports and alerts."""

    safety: SafetySettings = field(default_factory=SafetySettings)
    """Checks on what the model says."""

    logging: LoggingSettings = field(default_factory=LoggingSettings)
    """Logging."""


def loopback_wyoming(wyoming: WyomingSettings) -> WyomingSettings:
    """`wyoming` on 127.0.0.1 with a port the system picks, no zeroconf and no services: for
    the demo, the benchmarks and the tests, which must not reach beyond this machine."""
    return replace(
        wyoming, satellite_host="127.0.0.1", satellite_port=0, zeroconf=False,
        services_enabled=False,
    )  # fmt: skip
