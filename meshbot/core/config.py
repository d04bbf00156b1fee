"""Configuration: one TOML file into frozen pydantic models, then env and CLI overrides.

Load it once at start-up with `load_config`; everything downstream reads typed attributes.
"""

from __future__ import annotations

import json
import os
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from meshbot.core import limits

ENV_PREFIX = "MESHBOT_"

# No number in it: a small model told "588 bytes" echoes the figure back ("The answer is: 588 bytes").
# {budget_sentences} is the length in words ("three short sentences"); {budget_bytes} and
# {budget_words} still work in an operator's own prompt.
DEFAULT_SYSTEM_PROMPT = (
    "You are {name}, a helpful assistant reached over a slow LoRa radio mesh. "
    "Answer in plain text, no markdown, no lists, in {budget_sentences} at most. "
    "Reply in the same language as the question. "
    "Never invent local facts such as places, times, channels or people: "
    "use the local notes when they are given, and say you do not know when they do not hold the answer."
)


class ConfigError(Exception):
    """A config file or override that cannot be used; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RadioConfig(_Section):
    """How to reach the mesh: the transport, and for `meshtastic` at most one of port, host or ble."""

    transport: str = "meshtastic"  # a name in meshbot.radios.TRANSPORTS
    port: str | None = None  # serial device, e.g. /dev/ttyUSB0
    host: str | None = None  # HOST or HOST:PORT of a node's TCP API
    ble: str | None = None  # BLE address or name
    no_nodes: bool = True  # skip downloading the node DB: faster connect, less memory
    connect_timeout_s: float = Field(default=300.0, gt=0)
    # With no device given and none found: "sim" starts the virtual mesh demo, "fail" exits.
    when_no_radio: Literal["sim", "fail"] = "sim"

    @model_validator(mode="after")
    def _one_transport(self) -> RadioConfig:
        given = [k for k in ("port", "host", "ble") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give only one of port, host, ble (got {', '.join(given)})")
        return self


class ModelConfig(_Section):
    """Which backend writes the answers, its own settings, and the sampling settings all backends share."""

    backend: str = "llama_cpp"  # a name in meshbot.models.BACKENDS
    # llama_cpp: the local GGUF
    path: Path | None = None  # None: the bundled SmolLM2-135M-Instruct
    n_ctx: int = Field(default=2048, ge=256, le=131072)
    threads: int = Field(default=0, ge=0, le=256)  # 0: one per core
    # shared sampling
    temperature: float = Field(default=0.3, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    repeat_penalty: float = Field(default=1.15, ge=0.5, le=2.0)
    seed: int = -1  # -1: random
    max_tokens_cap: int = Field(default=384, ge=16)
    # llama_cpp: RAM for saved KV states of recent conversations, so a follow-up re-reads only its new turn.
    # About 23 KB per token with the bundled model (a 4-turn conversation: ~10 MB); 0 turns it off.
    kv_cache_mb: float = Field(default=128.0, ge=0)
    # openai: a server speaking the OpenAI chat API (llama-server, llama_cpp.server, Ollama, vLLM)
    base_url: str | None = None  # e.g. http://10.0.0.5:8080/v1
    api_model: str | None = None  # None: the first model the server lists at /v1/models
    api_key: SecretStr | None = None  # never logged; or name a variable in api_key_env
    api_key_env: str | None = None  # an environment variable that holds the key
    connect_timeout_s: float = Field(default=5.0, gt=0)
    chunk_timeout_s: float = Field(default=60.0, gt=0)  # longest silence between streamed chunks
    # A server that is away: each question is retried with backoff this long, then the asker gets an apology.
    retry_for_s: float = Field(default=120.0, ge=0)
    retry_backoff_s: float = Field(default=2.0, gt=0)  # the first wait; doubles up to retry_max_backoff_s
    retry_max_backoff_s: float = Field(default=30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. http://10.0.0.5:8080/v1")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _backend_needs(self) -> ModelConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError('base_url is required with backend = "openai" (e.g. http://10.0.0.5:8080/v1)')
        return self


class PersonaConfig(_Section):
    """Who the bot says it is and how it is told to answer: the same for every backend."""

    bot_name: str = "meshbot"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT


class MeshConfig(_Section):
    """Fragment sizes and pacing on air."""

    max_fragment_bytes: int = Field(default=limits.APP_TEXT_LIMIT_BYTES, ge=40)
    max_fragments: int = Field(default=3, ge=1, le=20)
    min_gap_s: float = Field(default=3.0, ge=limits.TEXT_RATE_LIMIT_S)
    ack_timeout_s: float = Field(default=45.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    hop_limit: int | None = Field(default=None, ge=1, le=limits.MAX_HOP_LIMIT)
    # The bot's own share of air time per rolling hour, in percent; None: half the region's.
    airtime_budget_percent: float | None = Field(default=None, gt=0, le=100)
    # Put at the start of every text the bot sends, inside the byte budget: says "a machine wrote this",
    # and lets other bots' loop guards know. "" turns it off.
    ai_tag: str = "🤖 "

    @field_validator("ai_tag")
    @classmethod
    def _short_tag(cls, value: str) -> str:
        if len(value.encode("utf-8")) > 16 or any(ch in value for ch in "\n\r"):
            raise ValueError("must be one line of at most 16 UTF-8 bytes")
        return value

    @field_validator("max_fragment_bytes")
    @classmethod
    def _under_ceiling(cls, value: int) -> int:
        if value > limits.MAX_TEXT_BYTES_CHANNEL:
            raise ValueError(f"must be at most {limits.MAX_TEXT_BYTES_CHANNEL} bytes")
        return value


class ChannelRule(_Section):
    """When a broadcast on a channel addresses the bot, and where to answer it."""

    index: int = Field(ge=0, le=7)
    triggers: tuple[str, ...] = ("!ai", "@{short_name}")
    reply: Literal["channel", "dm", "off"] = "channel"
    # After a question from this channel is taken, others from it wait this long (ignored, logged).
    cooldown_s: float = Field(default=30.0, ge=0)
    # The mesh's default public channel (named after the preset, default key: LongFast/AQ==) is
    # answered only when this is true, even if it is listed.
    public: bool = False


class PolicyConfig(_Section):
    """What the bot answers."""

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: tuple[ChannelRule, ...]) -> tuple[ChannelRule, ...]:
        indices = [rule.index for rule in value]
        dupes = sorted({i for i in indices if indices.count(i) > 1})
        if dupes:
            raise ValueError(f"channel index {dupes[0]} is configured twice")
        return value

    answer_dms: bool = True
    channels: tuple[ChannelRule, ...] = (ChannelRule(index=0),)
    max_input_bytes: int = Field(default=limits.MAX_TEXT_BYTES_CHANNEL, ge=1)
    max_hops: int | None = Field(default=None, ge=0, le=limits.MAX_HOP_LIMIT)
    ignore_mqtt: bool = False
    short_name: str | None = None  # None: the node's own short name


class QueueConfig(_Section):
    """The fair queue in front of the model."""

    max_depth: int = Field(default=32, ge=1)
    max_per_node: int = Field(default=3, ge=1)
    busy_message: str = "Busy right now, please ask again in a few minutes."

    @field_validator("busy_message")
    @classmethod
    def _fits_a_dm(cls, value: str) -> str:
        if not value.strip() or len(value.encode("utf-8")) > limits.MAX_TEXT_BYTES_DM_WITH_REPLY_ID:
            raise ValueError(f"must be 1..{limits.MAX_TEXT_BYTES_DM_WITH_REPLY_ID} UTF-8 bytes")
        return value


class StoreConfig(_Section):
    """The durable queue: where it lives and how long things are kept."""

    path: str = "meshbot.db"  # relative to the working directory; ":memory:" keeps nothing
    max_age_s: float = Field(default=900.0, gt=0)  # unanswered longer than this: dropped, DM gets an apology
    keep_days: float = Field(default=7.0, gt=0)  # finished queries and events kept for `meshbot status`


class MemoryConfig(_Section):
    """Per-node conversation memory: recent exchanges go back into the prompt, bounded three ways."""

    enabled: bool = True
    turns: int = Field(default=6, ge=0, le=100)  # question-and-answer exchanges remembered per conversation
    # Tokens of history at most; also never more than n_ctx leaves after the system prompt, question and reply.
    max_history_tokens: int = Field(default=1024, ge=0)
    idle_expiry_s: float = Field(default=1800.0, gt=0)  # a conversation quiet this long is forgotten


class LimitsConfig(_Section):
    """Abuse limits: rate, repeats, who may use the bot, and who runs it."""

    per_node_burst: float = Field(default=3, ge=1)
    per_node_per_hour: float = Field(default=20, ge=0)
    global_burst: float = Field(default=10, ge=1)
    global_per_hour: float = Field(default=120, ge=0)
    repeat_window_s: float = Field(default=300.0, ge=0)  # same text from the same node: ignored
    allow: tuple[str, ...] = ()  # node ids ("!a1b2c3d4"); empty: everyone
    deny: tuple[str, ...] = ()
    bots: tuple[str, ...] = ()  # other bots' node ids: never answered
    admins: tuple[str, ...] = ()  # may send !pause, !resume, !stats by DM
    notice: str = "You are sending too fast; please wait {minutes} min."

    @field_validator("allow", "deny", "bots", "admins")
    @classmethod
    def _node_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from meshbot.core.ids import parse_node_id

        for item in value:
            parse_node_id(item)  # raises ValueError naming the bad id
        return value


class JoinConfig(_Section):
    """Multi-part questions: how long the bot waits for the rest of one before answering it."""

    enabled: bool = True
    # An unmarked message that does not look complete waits this long for a next part.
    window_s: float = Field(default=8.0, ge=0)
    # A part that says more follows (1/3, 1/+, or cut off near the cap) waits this long for the next one.
    part_wait_s: float = Field(default=90.0, ge=0)
    # At or above this many bytes, a message not ending a sentence counts as cut off, and one that
    # does is not "well under the cap" (so it waits window_s).
    long_bytes: int = Field(default=170, ge=1)
    max_parts: int = Field(default=6, ge=1, le=20)


class CommandsConfig(_Section):
    """Words that run a command instead of asking the model (case-insensitive; in a DM or after a trigger)."""

    help: tuple[str, ...] = ("!help",)
    ping: tuple[str, ...] = ("!ping",)
    status: tuple[str, ...] = ("!status",)
    reset: tuple[str, ...] = ("!reset",)
    more: tuple[str, ...] = ("more", "!more", "more please", "continue")
    src: tuple[str, ...] = ("!src",)
    # Commands have their own allowance, apart from questions: this many at once, refilled per hour.
    per_node_burst: float = Field(default=6, ge=1)
    per_node_per_hour: float = Field(default=60, ge=0)


class KnowledgeConfig(_Section):
    """The operator's own notes (Markdown and text files), indexed offline and given to the model as grounding."""

    enabled: bool = True  # false: ignore `paths` (e.g. to compare with and without notes)
    paths: tuple[str, ...] = ()  # folders (or single files) of .md/.txt notes; empty: knowledge off
    index_path: str | None = None  # SQLite file of the index; None: next to [store] path
    max_passages: int = Field(default=3, ge=1, le=20)
    token_budget: int = Field(default=400, ge=16, le=8192)  # prompt tokens the notes may take, estimated
    reindex_interval_s: float = Field(default=30.0, gt=0)  # how often files are checked for changes (mtime)
    passage_bytes: int = Field(default=600, ge=80, le=8000)  # longest passage a file is split into

    @property
    def active(self) -> bool:
        """True when notes are to be looked up for each question."""
        return self.enabled and bool(self.paths)


class LogConfig(_Section):
    """How the daemon logs."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: Any) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "level" else value.lower()


class MqttConfig(_Section):
    """The `mqtt` transport: a Meshtastic MQTT broker, the channel the bot sits on, and its own PKI identity."""

    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None  # never logged
    tls: bool = False
    ca_file: Path | None = None  # None with tls on: the system's CA store
    client_id: str | None = None  # None: "meshbot-" and the node id (a stable id keeps the broker session)
    root: str = "msh/US"  # topic root; gateways publish on <root>/2/e/<channel>/<!gateway>
    channel: str = "LongFast"  # the channel name, as in the topic and the channel hash
    psk: str = "AQ=="  # base64; "AQ==" is the firmware's default key
    node_id: str | None = None  # the bot's "!xxxxxxxx"; None: made up on first start, kept in the store
    private_key: SecretStr | None = None  # base64 X25519; None: generated on first start, kept in the store
    long_name: str | None = None  # None: [persona] bot_name
    short_name: str = "AI"
    nodeinfo_interval_s: float = Field(default=3 * 3600.0, ge=60)  # re-announce our NodeInfo (public key)
    key_wait_s: float = Field(default=15.0, ge=0)  # a DM to a node whose key we lack waits this long for it
    ack_wait_s: float = Field(default=20.0, gt=0)  # an end-to-end ACK through some gateway, else "handed over"
    max_nodes: int = Field(default=5000, ge=16)  # public keys kept (the least recently heard go first)
    key_ttl_days: float = Field(default=30.0, gt=0)  # a key not heard again for this long is forgotten
    keepalive_s: int = Field(default=60, ge=5, le=65535)
    session_expiry_s: int = Field(default=86400, ge=0)  # the broker keeps our subscriptions and QoS 1 backlog
    max_backoff_s: float = Field(default=60.0, ge=1)  # reconnect forever, waits doubling up to this
    ok_to_mqtt: bool = True  # the Data bitfield bit that lets gateways uplink our packets

    @field_validator("psk")
    @classmethod
    def _psk(cls, value: str) -> str:
        from meshbot.core.keytext import parse_psk_bytes

        parse_psk_bytes(value)
        return value

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str | None) -> str | None:
        from meshbot.core.ids import parse_node_id

        if value is not None:
            parse_node_id(value)
        return value

    @field_validator("private_key")
    @classmethod
    def _private_key(cls, value: SecretStr | None) -> SecretStr | None:
        from meshbot.core.keytext import parse_key_bytes

        if value is not None:
            parse_key_bytes(value.get_secret_value())
        return value

    @field_validator("root", "channel")
    @classmethod
    def _topic_part(cls, value: str, info: Any) -> str:
        bad = set("+#") | ({"/"} if info.field_name == "channel" else set())
        if not value or value != value.strip("/") or bad & set(value):
            raise ValueError(
                f"must be a non-empty topic {'level' if info.field_name == 'channel' else 'prefix'}"
                " without +, # or a leading/trailing /"
            )
        return value


class SimConfig(_Section):
    """The virtual mesh behind the demo (`meshbot run` with no radio) and `meshbot sim`."""

    # A bundled topology's name ("demo", "city") or the path of a topology TOML file.
    topology: str = Field(default="demo", min_length=1)


class ClusterConfig(_Section):
    """Several workers behind one bot: the shared store (Redis) they claim questions in. Unset: one worker."""

    redis_url: str | None = None  # e.g. redis://10.0.0.5:6379/0; None: a single worker, no shared store
    worker_id: str | None = None  # None: "<hostname>-<pid>"; a stable id lets a restart take its own work back at once
    group: str = "meshbot"  # the MQTT shared-subscription group and the Redis key prefix: one per bot
    lease_s: float = Field(default=60.0, ge=1)  # a silent worker's questions are taken over after this long
    claim_ttl_s: float = Field(default=900.0, ge=10)  # how long a packet's claim blocks other gateways' copies
    heartbeat_s: float = Field(default=5.0, gt=0)  # workers say they are alive this often (3 missed: gone)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not value or set("+#/$ ") & set(value):
            raise ValueError("must be a non-empty name without +, #, /, $ or spaces")
        return value

    @property
    def enabled(self) -> bool:
        """True when workers share a store."""
        return bool(self.redis_url)


class Config(_Section):
    """The whole configuration."""

    radio: RadioConfig = RadioConfig()
    model: ModelConfig = ModelConfig()
    persona: PersonaConfig = PersonaConfig()
    mesh: MeshConfig = MeshConfig()
    policy: PolicyConfig = PolicyConfig()
    queue: QueueConfig = QueueConfig()
    store: StoreConfig = StoreConfig()
    memory: MemoryConfig = MemoryConfig()
    limits: LimitsConfig = LimitsConfig()
    join: JoinConfig = JoinConfig()
    commands: CommandsConfig = CommandsConfig()
    knowledge: KnowledgeConfig = KnowledgeConfig()
    log: LogConfig = LogConfig()
    mqtt: MqttConfig = MqttConfig()
    sim: SimConfig = SimConfig()
    cluster: ClusterConfig = ClusterConfig()


SECTIONS = tuple(Config.model_fields)

# Keys that moved: operators' files and MESHBOT_* variables keep working, with a warning.
# old (section, key) -> new (section, key)
MOVED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("model", "bot_name"): ("persona", "bot_name"),
    ("model", "system_prompt"): ("persona", "system_prompt"),
}


class ConfigDeprecation(UserWarning):
    """A config key or MESHBOT_* variable that still works under an old name."""


def _env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


def _apply_moved(data: dict[str, Any]) -> None:
    for (old_sec, old_key), (new_sec, new_key) in MOVED_KEYS.items():
        section = data.get(old_sec)
        if not isinstance(section, dict) or old_key not in section:
            continue
        value = section.pop(old_key)
        old_env, new_env = _env_name(old_sec, old_key), _env_name(new_sec, new_key)
        warnings.warn(
            f"{old_sec}.{old_key} ({old_env}) is deprecated: use {new_sec}.{new_key} ({new_env})",
            ConfigDeprecation,
            stacklevel=3,
        )
        target = data.setdefault(new_sec, {})
        if isinstance(target, dict):
            target.setdefault(new_key, value)  # the new name wins when both are given


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{key}: {e['msg']}")
    return "; ".join(lines)


def _merge(base: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    node = base
    for part in key[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(key)}: {part} is not a section")
    node[key[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"{name}: no such config section (expected MESHBOT_<SECTION>_<KEY>)")
        out[(section, rest[len(section) + 1 :])] = _parse_env_value(raw)
    return out


def _parse_env_value(raw: str) -> Any:
    # Lists and tables come as JSON; everything else stays a string for pydantic to coerce.
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the TOML file, apply MESHBOT_* env vars then CLI overrides ("section.key")."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text
            raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    env = os.environ if environ is None else environ
    for (section, key), value in _env_overrides(env).items():
        _merge(data, (section, key), value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _merge(data, tuple(dotted.split(".")), value)
    _apply_moved(data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{_describe(exc)}") from exc
