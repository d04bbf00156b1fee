"""`meshbot handset`: be a person at a handset from the terminal: send a question, see the answer arrive.

It talks to a node's TCP API (a real node's, or a virtual one of `meshbot run`/`meshbot sim`) through
the same transport the bot uses, so it is the official `meshtastic` library underneath. Unlike the
library's CLI (`meshtastic --sendtext`, which sends and exits) it waits for the answer and prints
each fragment as the handset's screen would show it, then exits when the last one is in.
"""

from __future__ import annotations

import argparse
import queue
import re
import sys
import threading
import time
from typing import Any, TextIO

from meshbot.app import logs
from meshbot.core import limits
from meshbot.core.config import load_config
from meshbot.core.domain import AckStatus, Inbound, Outbound, RadioEvent, RadioUnavailable, SendResult
from meshbot.core.ids import node_id, parse_node_id

# A fragment with more to come: "2/+ ..." (after the bot's tag, if it has one).
MORE_FOLLOWS = re.compile(r"^\D{0,8}?\d+/\+ ")
CONNECT_TIMEOUT_S = 15.0
SETTLE_S = 5.0  # the node's answer to the library's first heartbeat comes in milliseconds; a slow link gets this


def register(sub: Any) -> None:
    """Add the `handset` subcommand to the main parser's subparsers."""
    p = sub.add_parser("handset", help="send a question from a node's TCP API and print the answer as it arrives")
    p.add_argument("--host", required=True, help="the node's TCP API, HOST[:PORT] (a virtual handset's is printed)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--to", metavar="NODE", help="DM this node (e.g. the bot's '!0bb00001')")
    where.add_argument("--channel", type=int, metavar="N", help="send on channel N (start with !ai for the bot)")
    where.add_argument("--nodes", action="store_true", help="list the nodes this handset knows, then exit")
    p.add_argument("--wait", type=float, default=120.0, metavar="S", help="give up after S s of silence (120)")
    p.add_argument("text", nargs="?", help="what to send; none: just print what arrives until Ctrl-C")
    p.set_defaults(func=cmd_handset)


def cmd_handset(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Send, then print arrivals until the answer is complete, --wait seconds pass quietly, or Ctrl-C."""
    if out is None:  # run as a command: errors only (the radio's retries are its business; the give-up is ours)
        logs.configure("ERROR", "text")
    out = out or sys.stdout
    if args.text is not None and args.to is None and args.channel is None:
        out.write("meshbot handset: say where it goes: --to NODE (a DM) or --channel N\n")
        return 2
    try:
        dest = parse_node_id(args.to) if args.to else limits.BROADCAST_NUM
    except ValueError as exc:
        out.write(f"meshbot handset: --to: {exc}\n")
        return 2
    from meshbot.radios.meshtastic_lib import MeshtasticRadio

    # The node list too (no_nodes off): the senders' names, as the handset's app shows them.
    radio_cfg = {"radio.host": args.host, "radio.connect_timeout_s": CONNECT_TIMEOUT_S, "radio.no_nodes": False}
    radio = MeshtasticRadio(load_config(overrides=radio_cfg, environ={}).radio, backoff_s=(1.0, 1.0))
    try:
        return _session(radio, args, dest, out)
    except RadioUnavailable as exc:
        out.write(f"meshbot handset: {args.host}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        radio.close()


def _session(radio: Any, args: argparse.Namespace, dest: int, out: TextIO) -> int:
    """Connect, then list the nodes, or send and show what arrives."""
    arrivals: queue.Queue[Inbound | SendResult] = queue.Queue()
    # The radio retries for ever, as the bot must; a person at a terminal wants an answer: give up in time.
    give_up = threading.Timer(CONNECT_TIMEOUT_S, radio.close)
    give_up.start()
    try:
        radio.start(arrivals.put, _ignore)
    except RadioUnavailable:
        out.write(f"meshbot handset: no node answered at {args.host} within {CONNECT_TIMEOUT_S:g} s\n")
        return 1
    finally:
        give_up.cancel()
    radio.wait_settled(SETTLE_S)  # then closing never races the library's first heartbeat
    me = radio.local_node().node_num
    if args.nodes:
        out.write(nodes_text(radio.known_nodes(), me))
        return 0
    out.write(f"connected to {args.host} as {node_id(me)}\n")
    if args.text is not None:
        message = Outbound(args.text, dest, channel=args.channel or 0, want_ack=args.to is not None)
        radio.send(message, arrivals.put)
        out.write(f"[{_clock()}] you → {_where(message)}: {args.text}\n")
    out.flush()
    return _show(arrivals, args, radio, me, out)


def _show(
    arrivals: queue.Queue[Inbound | SendResult], args: argparse.Namespace, radio: Any, me: int, out: TextIO
) -> int:
    """Print arrivals; 0 once the answer is complete (or on silence after some of it), 1 if nothing came."""
    heard = False
    while True:
        try:
            item = arrivals.get(timeout=args.wait if args.text is not None else None)
        except queue.Empty:
            out.write(f"({args.wait:g} s without a word: giving up)\n" if not heard else "")
            return 0 if heard else 1
        if isinstance(item, SendResult):
            out.write(f"[{_clock()}] ({_ack_text(item)})\n")
        elif item.text is not None and (item.to == me or item.to == limits.BROADCAST_NUM):
            name = _name(radio.short_name_of(item.sender), item.sender)
            hops = f" ({item.hops} hop{'s' * (item.hops != 1)})" if item.hops is not None else ""
            to = "you" if item.to == me else f"#ch{item.channel}"
            out.write(f"[{_clock()}] {name} → {to}{hops}: {item.text}\n")
            if args.text is not None and _answers_us(item, args) and not MORE_FOLLOWS.match(item.text):
                out.flush()
                return 0
            heard = heard or _answers_us(item, args)
        out.flush()


def _name(short_name: str | None, num: int) -> str:
    """The sender's short name; its id when the node list has only the library's stand-in (the id's last 4 digits)."""
    if not short_name or short_name == node_id(num)[-4:]:
        return node_id(num)
    return short_name


def nodes_text(nodes: list[dict[str, Any]], me: int) -> str:
    """The handset's node list, as the apps list it: name, id, hops away, SNR."""
    lines = [f"{'name':<16} {'id':<10} {'hops':>4} {'snr':>6}"]
    for node in nodes:
        mine = node["num"] == me
        hops = "self" if mine else ("?" if node["hops"] is None else str(node["hops"]))
        snr = "" if mine or node["snr"] is None else f"{node['snr']:.1f}"
        name = node["long_name"] or node["short_name"] or node_id(node["num"])
        lines.append(f"{name[:16]:<16} {node_id(node['num']):<10} {hops:>4} {snr:>6}")
    return "\n".join(lines) + "\n"


def _answers_us(item: Inbound, args: argparse.Namespace) -> bool:
    if args.to is not None:
        return item.is_dm and item.sender == parse_node_id(args.to)
    return not item.is_dm and item.channel == (args.channel or 0)


ACK_TEXT = {
    AckStatus.ACKED: "delivered: ACK from the destination",
    AckStatus.IMPLICIT: "relayed by a neighbour (implicit ACK)",
    AckStatus.SENT: "sent",
}


def _ack_text(result: SendResult) -> str:
    return ACK_TEXT.get(result.status) or f"not delivered: {result.status.value} {result.reason}"


def _where(message: Outbound) -> str:
    return f"#ch{message.channel}" if message.dest == limits.BROADCAST_NUM else node_id(message.dest)


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _ignore(event: RadioEvent) -> None:
    pass
