"""Commands a person on a handset may send: answered at once, in one fragment, without the model.

In a DM the message is the command; on a channel it follows the trigger (``!ai !ping``). Words come from
``[commands]`` (case-insensitive; trailing ``.``, ``!`` or ``?`` ignored, so ``More?`` is ``more``). The
table maps a command name to a handler; `more` is in the word table but is answered by the worker from the
stored remainder, so the intake turns it into a `Kind.MORE` query instead of calling a handler here.
Commands never spend the asker's question allowance; they have their own (``[commands] per_node_*``).

The hooks come from `app.compose`: `forget(node, channel)` (conversation memory; channel None for a DM)
and `last_source(node, channel)` (the knowledge index: where the last answer's notes came from).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from meshbot.core.config import Config
from meshbot.core.domain import Clock, Inbound, NodeDirectory
from meshbot.core.policy import Accept
from meshbot.core.trust import conversation_of
from meshbot.service.mesh_commands import MeshCommands

log = logging.getLogger(__name__)

Forget = Callable[[int, int | None], None]
LastSource = Callable[[int, int | None], str | None]
NAMES = ("help", "ping", "status", "reset", "more", "src", "nodes", "where", "mesh", "node")
# Commands followed by a word of their own (`!node BRVO`); the others must be the whole message.
WITH_ARGUMENT = frozenset({"node"})


@dataclass(frozen=True)
class CommandHooks:
    """What the daemon's commands call outside the intake; None: that feature is off."""

    forget: Forget | None = None
    last_source: LastSource | None = None
    mesh_source: LastSource | None = None  # the node directory, when the last answer was given mesh facts


@dataclass(frozen=True)
class CommandRequest:
    """One command as received: who sent it, how, and where the reply goes."""

    name: str
    msg: Inbound
    decision: Accept

    @property
    def channel(self) -> int | None:
        """The conversation's channel: None for a proven DM (memory is per node there), else its slot."""
        return conversation_of(self.msg)[1]

    @property
    def argument(self) -> str:
        """What follows the command word (`!node BRVO` -> "BRVO"); "" when nothing does."""
        words = self.decision.question.split(maxsplit=1)
        return words[1].strip() if len(words) > 1 else ""


Handler = Callable[[CommandRequest], str]


def _word(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".!?").rstrip()


class CommandTable:
    """Command words to names, and names to handlers."""

    def __init__(self, words: Mapping[str, tuple[str, ...]], handlers: Mapping[str, Handler]) -> None:
        self._by_word: dict[str, str] = {}
        for name, spellings in words.items():
            for spelling in spellings:
                if _word(spelling):
                    self._by_word.setdefault(_word(spelling), name)
        self._handlers = dict(handlers)

    def match(self, text: str) -> str | None:
        """The command `text` is: exactly one of the configured words, or one that takes a word and its word."""
        exact = self._by_word.get(_word(text))
        if exact is not None:
            return exact
        first = text.split(maxsplit=1)
        name = self._by_word.get(_word(first[0])) if len(first) == 2 else None
        return name if name in WITH_ARGUMENT else None

    def run(self, request: CommandRequest) -> str:
        """The reply text for a command that has a handler."""
        return self._handlers[request.name](request)

    def has_handler(self, name: str) -> bool:
        """True for commands answered here (not `more`, which the worker answers)."""
        return name in self._handlers


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24}h"


class StandardCommands:
    """The handlers behind !help, !ping, !status, !reset and !src."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock,
        model_name: str,
        queue_depth: Callable[[], int],
        forget: Forget | None = None,
        last_source: LastSource | None = None,
        directory: NodeDirectory | None = None,
        mesh_source: LastSource | None = None,
        power_line: Callable[[], str] | None = None,
    ) -> None:
        self._cfg = cfg
        self._mesh_source = mesh_source
        self._power_line = power_line
        budget = cfg.mesh.max_fragment_bytes - len(cfg.mesh.ai_tag.encode())
        self._mesh = MeshCommands(cfg, directory, budget) if directory is not None else None
        self._clock = clock
        self._model_name = model_name
        self._queue_depth = queue_depth
        self._forget = forget
        self._last_source = last_source
        self._started = clock.now()

    def table(self) -> CommandTable:
        """The command table for the configured words."""
        words = {name: getattr(self._cfg.commands, name) for name in NAMES}
        handlers: dict[str, Handler] = {
            "help": self.help,
            "ping": self.ping,
            "status": self.status,
            "reset": self.reset,
            "src": self.src,
        }
        for name in ("nodes", "where", "mesh", "node"):
            handlers[name] = self._mesh_handler(name)
        return CommandTable(words, handlers)

    def _mesh_handler(self, name: str) -> Handler:
        def run(request: CommandRequest) -> str:
            if self._mesh is None:
                return "The node directory is off on this bot."
            msg = request.msg
            return self._mesh.handlers()[name](msg.sender, msg.is_dm, request.argument)

        return run

    def help(self, request: CommandRequest) -> str:
        """What the bot is and the commands, in one line."""
        c = self._cfg.commands
        mesh: tuple[tuple[str, ...], ...] = ()
        if self._mesh is not None:
            mesh = (c.nodes, c.where, c.mesh, c.node) if self._mesh.locations else (c.nodes, c.mesh, c.node)
        first = [words[0] for words in (c.ping, c.status, c.reset, c.src, *mesh, c.more) if words]
        return (
            f"I am {self._cfg.persona.bot_name}, an AI on this mesh. Ask in plain words; send a long question "
            f"in parts (1/2, 2/2). Commands: {' '.join(first)}"
        )

    def ping(self, request: CommandRequest) -> str:
        """How the question arrived: hops, and the last hop's SNR and RSSI."""
        msg = request.msg
        if msg.hops is None:
            hops = "hops unknown"
        elif msg.hops == 0:
            hops = "direct (0 hops)"
        else:
            hops = f"{msg.hops} hop{'s' if msg.hops != 1 else ''}"
        snr = f"SNR {msg.snr:.1f} dB" if msg.snr is not None else "SNR ?"
        rssi = f"RSSI {msg.rssi} dBm" if msg.rssi is not None else "RSSI ?"
        return f"pong: {hops}, {snr}, {rssi}"

    def status(self, request: CommandRequest) -> str:
        """Queue depth, the model's name and uptime; the power mode and energy when power awareness is on."""
        uptime = _duration(self._clock.now() - self._started)
        power_line = self._power_line() if self._power_line is not None else ""
        power = f"; {power_line}" if power_line else ""
        return f"queue {self._queue_depth()}, model {self._model_name}, up {uptime}{power}"

    def reset(self, request: CommandRequest) -> str:
        """Forget this conversation (per node, and per channel on a channel)."""
        if self._forget is None:
            return "Memory is off: each question is answered on its own."
        self._forget(request.msg.sender, request.channel)
        return "Forgotten: the next question starts a new conversation."

    def src(self, request: CommandRequest) -> str:
        """Where the last answer's facts came from: the operator's notes, the node directory, or neither."""
        node, channel = request.msg.sender, request.channel
        mesh = self._mesh_source(node, channel) if self._mesh_source is not None else None
        notes = self._last_source(node, channel) if self._last_source is not None else None
        if notes or mesh:
            return "Source: " + "; ".join(s for s in (notes, mesh) if s)
        if self._last_source is None:
            return "Knowledge is off: answers come from the model alone."
        return "No source: the last answer used no notes."
