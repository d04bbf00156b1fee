"""The config's smaller sections: joining, commands, knowledge, logging, MQTT, the simulator and the cluster.

Split from `core.config` only for size; import them from there like every other section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


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
    # mesh commands, answered from the node directory (`!node` takes a name: `!node BRVO`)
    nodes: tuple[str, ...] = ("!nodes",)
    where: tuple[str, ...] = ("!where",)
    mesh: tuple[str, ...] = ("!mesh",)
    node: tuple[str, ...] = ("!node",)
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
    # Our NodeInfo goes out at most this often, however often the broker connection comes back.
    announce_min_gap_s: float = Field(default=60.0, ge=0)
    # A DM whose asker's key never came is dropped (as the firmware does). True answers it on the channel
    # instead, where everyone reads it: an explicit choice, off by default (docs/security.md).
    dm_fallback_to_channel: bool = False

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


class MeshDirectoryConfig(_Section):
    """What the bot keeps about the nodes of its mesh, and which mesh commands may talk about places."""

    max_nodes: int = Field(default=2000, ge=1, le=100_000)  # the longest-unheard node is forgotten first
    ttl_days: float = Field(default=7.0, gt=0)  # a node unheard this long is forgotten
    # false: !where is off, and no command or prompt gives a distance or bearing
    location_commands: bool = True
    # prompt tokens the mesh facts block may take (estimated), for a question about the mesh
    token_budget: int = Field(default=200, ge=32, le=4096)


class EmergencyConfig(_Section):
    """The emergency lane: texts that always get through, an alert to the helpers, and the first model answer."""

    enabled: bool = True  # false: no text is an emergency
    words: tuple[str, ...] = Field(default_factory=lambda: _emergency_words())  # whole words or phrases
    reply: str = "Emergency heard: alerting help. Send where you are, what happened, how many are hurt."
    notify_nodes: tuple[str, ...] = ()  # node ids ("!a1b2c3d4") that get every alert by DM, ACKed
    notify_channel: int | None = Field(default=None, ge=0, le=7)  # a channel index that gets every alert too
    require_proof: bool = False  # true: only a sender the packet proves (a PKI DM) counts
    realert_window_s: float = Field(default=120.0, ge=0)  # a node's further emergencies within this...
    realert_every_s: float = Field(default=60.0, ge=0)  # ...alert again at most this often
    follow_up_s: float = Field(default=600.0, ge=0)  # after one, that node's texts there count too (0: off)

    @field_validator("notify_nodes")
    @classmethod
    def _node_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from meshbot.core.ids import parse_node_id

        for item in value:
            parse_node_id(item)
        return value

    @field_validator("reply")
    @classmethod
    def _one_fragment(cls, value: str) -> str:
        if not value.strip() or len(value.encode("utf-8")) > 180:
            raise ValueError("must be 1..180 UTF-8 bytes (one fragment with the AI tag)")
        return value

    @property
    def active(self) -> bool:
        """True when texts are checked for emergencies."""
        return self.enabled and bool(self.words)


def _emergency_words() -> tuple[str, ...]:
    from meshbot.core.emergency import DEFAULT_WORDS

    return DEFAULT_WORDS


class PowerConfig(_Section):
    """Power awareness on a battery: normal, economy and sleep modes from the battery level and CPU heat."""

    enabled: bool = True
    economy_below_percent: float = Field(default=40.0, ge=0, le=100)
    sleep_below_percent: float = Field(default=15.0, ge=0, le=100)
    hysteresis_percent: float = Field(default=5.0, ge=0, le=50)  # a mode is left only this far past its line
    max_cpu_temp_c: float = Field(default=80.0, gt=0)  # hotter: sleep (left 5 °C below)
    interval_s: float = Field(default=60.0, gt=0)  # how often the sources are read
    radio: bool = True  # the bot's own node's device metrics (battery level; above 100 = external power)
    host: bool = False  # this machine's /sys/class/power_supply and /sys/class/thermal
    sysfs_root: str = "/sys"
    command: str | None = None  # a command printing the battery percent (a UPS HAT, a charge controller)
    command_timeout_s: float = Field(default=10.0, gt=0)
    economy_max_tokens: int = Field(default=96, ge=8)  # the token cap of an answer in economy mode
    notice: str = "low power: emergencies only; ask again later"
    watts_per_core: float = Field(default=1.5, gt=0)  # energy estimate where RAPL is not readable
    powercap_root: str = "/sys/class/powercap"

    @model_validator(mode="after")
    def _ordered(self) -> PowerConfig:
        if self.sleep_below_percent > self.economy_below_percent:
            raise ValueError("sleep_below_percent must not be above economy_below_percent")
        return self


class ConsoleConfig(_Section):
    """The operator's console: Prometheus `/metrics`, a JSON feed and a live page at `/`. Off unless `port` is set."""

    host: str = "127.0.0.1"  # anything but loopback needs a token
    port: int | None = Field(default=None, ge=0, le=65535)  # None: off; 0: any free port (tests)
    token: SecretStr | None = None  # a bearer token; required when host is not loopback
    show_text: bool = False  # the page's table shows question text only when true
    history_h: float = Field(default=24.0, gt=0, le=168)  # hours of one-minute history kept and served

    @model_validator(mode="after")
    def _token_off_loopback(self) -> ConsoleConfig:
        if self.enabled and not is_loopback(self.host) and self.token is None:
            raise ValueError(
                f"host {self.host} is not loopback: set console.token (MESHBOT_CONSOLE_TOKEN) so the console "
                "asks for a bearer token, or bind 127.0.0.1"
            )
        return self

    @property
    def enabled(self) -> bool:
        """True when the console is to be served."""
        return self.port is not None


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve anywhere


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
