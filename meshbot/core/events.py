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
    HEARTBEAT = "heartbeat"
    # the radio link
    RADIO_CONNECTING = "radio-connecting"
    RADIO_UP = "radio-up"
    RADIO_DOWN = "radio-down"
    RADIO_RETRY = "radio-retry"
    RADIO_CLOSED = "radio-closed"
    # intake
    RECEIVED = "received"
    IGNORED = "ignored"
    INPUT_CUT = "input-cut"
    QUEUED = "queued"
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
    SKIPPED_DELIVERED = "skipped-delivered"
    MODEL_RETRY = "model-retry"
    MODEL_ERROR = "model-error"
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
    NO_TRIGGER = "no-trigger"
    MALFORMED = "malformed"
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
