"""Every log event an operator (or a test, or the benchmark) can filter on, and why things are refused.

One name per transition. A log call passes `extra={"event": Event.X, ...}`; the JSON log format writes
the value, so these strings are a public interface: rename one only with a deprecation note in the README.
`Reason` is the one vocabulary for why a packet was ignored or a question dropped or failed: the same
word goes in the log line and in the store's row.
"""

from __future__ import annotations

import enum


class Event(enum.StrEnum):
    """The `event` field of each log line an operator cares about."""

    # lifecycle
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SIGNAL = "signal"  # SIGINT or SIGTERM: a graceful stop begins
    INTERRUPTED = "interrupted"  # a second signal: exit at once
    HEARTBEAT = "heartbeat"
    CONFIG_READ = "config-read"
    # the radio link
    RADIO_CONNECTING = "radio-connecting"
    RADIO_UP = "radio-up"
    RADIO_DOWN = "radio-down"
    RADIO_RETRY = "radio-retry"
    RADIO_CLOSED = "radio-closed"
    # the mqtt transport: identity and keys
    IDENTITY = "identity"
    NODEINFO_SENT = "nodeinfo-sent"
    KEY_LEARNT = "key-learnt"
    KEY_WAIT = "key-wait"
    DM_ON_CHANNEL = "dm-on-channel"
    KEY_MISMATCH = "key-mismatch"  # a NodeInfo that would replace a pinned public key: dropped
    KEY_FORGOTTEN = "key-forgotten"  # an operator let a node's next key be pinned (!rekey, meshbot keys forget)
    STORE_LOCKED = "store-locked"  # another daemon holds the store: this one does not start
    # intake
    RECEIVED = "received"
    IGNORED = "ignored"
    INPUT_CUT = "input-cut"
    QUEUED = "queued"
    HELD = "held"  # a part of a multi-part question, waiting for the rest
    JOINED = "joined"
    DROPPED = "dropped"
    ADMIN = "admin"
    COMMAND = "command"
    # answering
    FIRST_FRAGMENT = "first-fragment"
    SHORTENED = "shortened"
    ANSWERED = "answered"
    EMPTY_ANSWER = "empty-answer"
    FAILED = "failed"
    MORE = "more"
    ABANDONED = "abandoned"
    RESUMED = "resumed"
    CUT_OFF = "cut-off"
    SKIPPED_DELIVERED = "skipped-delivered"
    MODEL_RETRY = "model-retry"
    MODEL_ERROR = "model-error"
    MODEL_BACK = "model-back"
    MODEL_CHOSEN = "model-chosen"
    # conversation memory
    MEMORY_FORGOTTEN = "memory-forgotten"
    MEMORY_EXPIRED = "memory-expired"
    MEMORY_UNAVAILABLE = "memory-unavailable"  # the shared store is away: answers go on without history
    MEMORY_BACK = "memory-back"
    # knowledge (the operator's notes)
    KNOWLEDGE_INDEXED = "knowledge-indexed"
    KNOWLEDGE_ERROR = "knowledge-error"
    # sending
    FRAGMENT_SENT = "fragment-sent"
    FRAGMENT_ACKED = "fragment-acked"
    FRAGMENT_NAK = "fragment-nak"
    ACK_TIMEOUT = "ack-timeout"
    RETRY = "retry"
    SEND_ERROR = "send-error"
    WAITING_FOR_RADIO = "waiting-for-radio"
    NODE_RETRIES = "node-retries"
    RETRANSMITTED = "retransmitted"  # mqtt: a DM without its ACK yet, published again (same packet id)
    # several workers behind one bot (the [cluster] section)
    CLUSTER_UP = "cluster-up"
    CLAIMED_ELSEWHERE = "claimed-elsewhere"
    TAKEN_OVER = "taken-over"
    HANDED_BACK = "handed-back"
    LEASE_LOST = "lease-lost"
    CLUSTER_ERROR = "cluster-error"
    CLUSTER_BACK = "cluster-back"
    # delivery edge cases
    UNREACHABLE = "unreachable"  # a fragment was given up: the asker is out of reach, the rest is held for "more"
    ANSWER_HELD = "answer-held"  # a fragment could not be sent for another reason: the rest is held the same way
    RESENT_AFTER_RECONNECT = "resent-after-reconnect"  # an unACKed fragment, sent again under its id at once
    RADIO_CANNOT_SEND = "radio-cannot-send"  # the node's settings keep it from transmitting (or from a region)
    # the node directory (what the bot knows about its mesh)
    DIRECTORY_LOADED = "directory-loaded"
    DIRECTORY_SEEDED = "directory-seeded"  # the radio's node DB was read at connect
    DIRECTORY_ERROR = "directory-error"
    # off-grid: the emergency lane and power awareness
    EMERGENCY = "emergency"  # an emergency heard (WARNING): the reply, the alert and the answer follow
    EMERGENCY_ALERT = "emergency-alert"  # an alert handed to the sender for the helpers
    POWER_MODE = "power-mode"  # the power mode changed (logged once on entry)
    POWER_SOURCE_ERROR = "power-source-error"  # a power source could not be read (once per outage)
    # the channel a transport sits on: the mesh's default public one (answered only with public = true) or not
    RADIO_CHANNEL = "radio-channel"
    # the operator's console
    CONSOLE_UP = "console-up"
    # grounded answers ([answers]): which path an answer took, and prompt framing kept off the air
    ANSWER_PATH = "answer-path"  # grounded, extractive, declined or open


class Reason(enum.StrEnum):
    """Why a packet was ignored, or a question dropped or failed: in the log and in the store."""

    # policy: not a question for us
    DUPLICATE = "duplicate"
    OWN_PACKET = "own-packet"
    OTHER_PORT = "other-port"
    TAPBACK = "tapback"
    INVALID_UTF8 = "invalid-utf8"
    EMPTY = "empty"
    NOT_FOR_US = "not-for-us"
    VIA_MQTT = "via-mqtt"
    TOO_FAR = "too-far"
    DMS_DISABLED = "dms-disabled"
    CHANNEL_DISABLED = "channel-disabled"
    PUBLIC_CHANNEL = "public-channel"
    CHANNEL_COOLDOWN = "channel-cooldown"
    NO_TRIGGER = "no-trigger"
    MALFORMED = "malformed"
    # the mqtt transport: packets it cannot open
    GARBAGE = "garbage"  # not a ServiceEnvelope, or one without a packet
    UNDECRYPTABLE = "undecryptable"  # wrong key, tampered or truncated
    UNKNOWN_PORT = "unknown-port"
    NO_PUBKEY = "no-pubkey"  # a PKI DM whose sender's public key we never heard
    # sender identity (core/trust.py)
    LEGACY_DM = "legacy-dm"  # a text DM not PKI-encrypted: its sender is not proven
    UNPROVEN = "unproven"  # a command that needs a proven sender, from a packet that is not
    KEY_MISMATCH = "key-mismatch"  # a NodeInfo that would replace a pinned public key
    # gate: not from this node, not now
    DENIED = "denied"
    OTHER_BOT = "other-bot"
    ADMIN_ONLY = "admin-only"
    REPEAT = "repeat"
    NODE_RATE = "node-rate"
    GLOBAL_RATE = "global-rate"
    # queue and answer
    QUEUE_FULL = "full"
    NODE_FULL = "node-full"
    QUEUE_FULL_ON_RESUME = "queue-full-on-resume"
    AIRTIME_BUDGET = "airtime-budget"
    STALE = "stale"
    SHUTDOWN = "shutdown"
    WORKER_ERROR = "worker-error"
    MODEL_UNAVAILABLE = "model-unavailable"
    HANDED_TO_CLUSTER = "handed-to-cluster"  # a local row whose question the shared store now holds
    LEASE_LOST = "lease-lost"  # another worker took the question over
    ASLEEP = "asleep"  # power mode sleep: questions get a notice, emergencies and commands are answered
