"""The config's smaller sections: joining, commands, knowledge, logging, MQTT, the simulator and the cluster.

Split from `core.config` only for size; import them from there like every other section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class AnswersConfig(_Section):
    """How the bot answers: only from what it retrieved (`grounded`) or freely (`open`), and its shipped reference."""

    # "auto": grounded for a model below `open_min_params` parameters (the bundled one) or of unknown size,
    # open for a larger one. "grounded": a factual question is answered only from the operator's notes and the
    # reference, else declined. "open": the model may answer anything, as a capable model should.
    mode: Literal["auto", "grounded", "open"] = "auto"
    open_min_params: float = Field(default=1e9, ge=0)
    # The model's parameter count, when the backend cannot tell (an OpenAI-compatible server); 0: unknown.
    model_params: float = Field(default=0, ge=0)
    # The offline first-aid, outdoor-safety and Meshtastic reference shipped with meshbot.
    reference: bool = True
    # A folder replacing the shipped reference: <lang>/ subfolders (en, es, de, fr, ...) or notes for every language.
    reference_path: str | None = None
