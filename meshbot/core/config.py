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

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from meshbot.core import limits

# The smaller sections live next door (size only); re-exported: import every section from here.
from meshbot.core.config_sections import (
    AnswersConfig as AnswersConfig,
)
from meshbot.core.config_sections import (
    ClusterConfig as ClusterConfig,
)
from meshbot.core.config_sections import (
    CommandsConfig as CommandsConfig,
)
from meshbot.core.config_sections import (
    ConsoleConfig as ConsoleConfig,
)
from meshbot.core.config_sections import (
    EmergencyConfig as EmergencyConfig,
)
from meshbot.core.config_sections import (
    JoinConfig as JoinConfig,
)
from meshbot.core.config_sections import (
    KnowledgeConfig as KnowledgeConfig,
)
from meshbot.core.config_sections import (
    LogConfig as LogConfig,
)
from meshbot.core.config_sections import (
    MeshDirectoryConfig as MeshDirectoryConfig,
)
from meshbot.core.config_sections import (
    MqttConfig as MqttConfig,
)
from meshbot.core.config_sections import (
    PowerConfig as PowerConfig,
)
from meshbot.core.config_sections import (
    SimConfig as SimConfig,
)
from meshbot.core.config_sections import (
    _Section,
)

ENV_PREFIX = "MESHBOT_"

# No number in it: a small model told "588 bytes" echoes the figure back ("The answer is: 588 bytes").
# {budget_sentences} is the length in words ("three short sentences"); {budget_bytes} and
# {budget_words} still work in an operator's own prompt.
DEFAULT_SYSTEM_PROMPT = (
    "You are {name}, a helpful assistant reached over a slow LoRa radio mesh. "
    "Answer in plain text, no markdown, no lists, in {budget_sentences} at most. "
    "Reply in the same language as the question. "
    "When text comes before the question, answer from that text only and copy its numbers, times and names exactly. "
    "Never invent local facts such as places, times, channels or people; say you do not know them."
)


DEFAULT_MESH_RULE = (
    "Questions about the mesh (its nodes, battery, signal, hops, distance, channel load) are answered only from "
    "the mesh facts given with the question: copy their figures exactly, and say you do not know what they do not say."
)


class ConfigError(Exception):
    """A config file or override that cannot be used; the message names the key."""


class RadioConfig(_Section):
    """How to reach the mesh: the transport, and for `meshtastic` at most one of port, host or ble."""

    transport: str = "meshtastic"  # a name in meshbot.radios.TRANSPORTS
    port: str | None = None  # serial device, e.g. /dev/ttyUSB0
    host: str | None = None  # HOST or HOST:PORT of a node's TCP API
    ble: str | None = None  # BLE address or name
    no_nodes: bool = True  # connect without the node DB (fast); the node directory then asks for it alone (69421)
    connect_timeout_s: float = Field(default=300.0, gt=0)
    # With no device given and none found: "sim" starts the virtual mesh demo, "fail" exits.
    when_no_radio: Literal["sim", "fail"] = "sim"
    # A text DM that is not PKI-encrypted proves nothing about its sender: refused, as firmware 2.7 does.
    # Licensed operators running without encryption may accept them; such a sender still never runs admin
    # commands nor reaches a PKI-proven conversation (see docs/security.md).
    accept_legacy_dms: bool = False

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
    # Disk for the states pushed out of that RAM (a directory of the process's own, removed at exit); 0: none.
    kv_spill_mb: float = Field(default=1024.0, ge=0)
    kv_spill_dir: str = ""  # where that directory goes; empty: the system's temporary directory
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
    # Added to the system prompt when a question about the mesh comes with the node directory's facts.
    mesh_rule: str = DEFAULT_MESH_RULE


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
    # May send !pause, !resume, !stats, !rekey by PKI DM: "!a1b2c3d4", or "!a1b2c3d4:BASE64KEY" to pin its key.
    admins: tuple[str, ...] = ()
    notice: str = "You are sending too fast; please wait {minutes} min."

    @field_validator("allow", "deny", "bots")
    @classmethod
    def _node_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from meshbot.core.ids import parse_node_id

        for item in value:
            parse_node_id(item)  # raises ValueError naming the bad id
        return value

    @field_validator("admins")
    @classmethod
    def _admins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from meshbot.core.trust import parse_admin

        for item in value:
            parse_admin(item)  # raises ValueError naming the bad id or key
        return value


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
    mesh_directory: MeshDirectoryConfig = MeshDirectoryConfig()
    emergency: EmergencyConfig = EmergencyConfig()
    power: PowerConfig = PowerConfig()
    console: ConsoleConfig = ConsoleConfig()
    answers: AnswersConfig = AnswersConfig()


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


# pydantic's error types for a value that should have been a list.
_LIST_ERRORS = frozenset({"tuple_type", "list_type", "set_type", "frozen_set_type"})


def _describe(err: ValidationError, from_env: Mapping[tuple[str, str], str] | None = None) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{key}: {e['msg']}{_env_hint(e, from_env or {})}")
    return "; ".join(lines)


def _env_hint(error: Any, from_env: Mapping[tuple[str, str], str]) -> str:
    """For a list given as a plain MESHBOT_* string: the JSON form the variable wants."""
    loc = tuple(str(p) for p in error["loc"][:2])
    raw = from_env.get(loc) if len(loc) == 2 else None
    if raw is None or error["type"] not in _LIST_ERRORS:
        return ""
    name = _env_name(*loc)
    return f" ({name} takes a JSON list, e.g. {name}='{json.dumps([raw])}')"


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
    from_env: dict[tuple[str, str], str] = {}  # plain-string env values, for the hint on a list error
    for (section, key), value in _env_overrides(env).items():
        _merge(data, (section, key), value)
        if isinstance(value, str):
            from_env[(section, key)] = value
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _merge(data, tuple(dotted.split(".")), value)
    _apply_moved(data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{_describe(exc, from_env)}") from exc
