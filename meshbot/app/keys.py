"""`meshbot keys list|forget`: the public keys the bot pinned on first use, and letting one go on purpose.

The mqtt transport pins the first key it hears for a node (as the firmware's NodeDB does) and drops a
NodeInfo that would change it. When a person really has a new key (a reset handset), the operator forgets
the old pin here, or an admin sends `!rekey !id`; the node's next NodeInfo is then pinned. With `[cluster]`
the pins live in the shared store, so one `forget` reaches every worker. A running daemon sees the change
at that node's next NodeInfo.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

from meshbot.app import configfile
from meshbot.core.config import Config, ConfigError
from meshbot.core.ids import node_id, parse_node_id
from meshbot.storage.records import StoreError


class Pins(Protocol):
    """What the command needs of storage.keys.KeyStore or cluster.keys.SharedKeys."""

    def pins(self, limit: int) -> list[tuple[int, bytes, float]]: ...
    def forget(self, node: int) -> bool: ...


def register(subparsers: Any) -> None:
    """Add the `keys` subcommand to the main parser's subparsers."""
    keys = subparsers.add_parser("keys", help="public keys pinned on first use (mqtt transport): list or forget one")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    listing = keys_sub.add_parser("list", help="every pinned key, most recently heard first")
    listing.add_argument("--config", type=Path, help=configfile.HELP)
    forget = keys_sub.add_parser("forget", help="unpin one node's key: its next NodeInfo is pinned instead")
    forget.add_argument("node", help="the node id, e.g. !a1b2c3d4")
    forget.add_argument("--config", type=Path, help=configfile.HELP)
    keys.set_defaults(func=cmd_keys)


@contextlib.contextmanager
def open_pins(cfg: Config) -> Iterator[Pins]:
    """The pins `cfg` names: the shared store with `[cluster]`, else `[store] path` (which must exist)."""
    if cfg.cluster.enabled:
        from meshbot.cluster.keys import SharedKeys
        from meshbot.cluster.shared import Shared

        shared = Shared(cfg.cluster)
        try:
            shared.check()
            yield SharedKeys(shared)
        finally:
            shared.close()
        return
    from meshbot.storage.keys import KeyStore
    from meshbot.storage.store import Store

    if cfg.store.path == ":memory:" or not Path(cfg.store.path).expanduser().is_file():
        raise ConfigError(f"store.path: no state database at {cfg.store.path} (give --config the daemon's config)")
    store = Store(cfg.store.path)
    try:
        yield KeyStore(store)
    finally:
        store.close()


def list_pins(pins: Pins, out: TextIO, now: float) -> int:
    """Print one line per pinned key."""
    rows = pins.pins(100_000)
    for node, key, heard in rows:
        ago = max(now - heard, 0.0) / 3600
        out.write(f"{node_id(node)}  {base64.b64encode(key).decode()}  heard {ago:.1f} h ago\n")
    out.write(f"{len(rows)} key(s) pinned\n")
    return 0


def cmd_keys(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`meshbot keys list|forget`."""
    out = out or sys.stdout
    cfg = configfile.load(args.config)[0]
    node = 0
    if args.keys_command == "forget":
        try:
            node = parse_node_id(args.node)
        except ValueError as exc:
            sys.stderr.write(f"meshbot keys: {exc}\n")
            return 2
    try:
        with open_pins(cfg) as pins:
            if args.keys_command == "list":
                return list_pins(pins, out, time.time())
            return forget_pin(pins, node, out)
    except (OSError, StoreError) as exc:  # the shared store away, a database that cannot be read
        sys.stderr.write(f"meshbot keys: {exc}\n")
        return 1


def forget_pin(pins: Pins, node: int, out: TextIO) -> int:
    """Unpin one key; exit 1 when none was pinned."""
    if not pins.forget(node):
        out.write(f"no key pinned for {node_id(node)}\n")
        return 1
    out.write(f"forgot the key of {node_id(node)}: its next NodeInfo is pinned\n")
    return 0
