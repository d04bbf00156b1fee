"""`meshbot sim`: run a virtual mesh from a topology (bundled name or file) until Ctrl-C, then print the mesh report.

Wired into the main CLI with `register(subparsers)`. Console output goes to the streams passed in
(stdout by default), never through logging.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from meshbot.app import configfile, interrupts, logs
from meshbot.core.config import Config
from meshbot.core.ids import node_id
from meshbot.sim.app.commands import ask_command, nodes_command, script
from meshbot.sim.app.console import HandsetConsole
from meshbot.sim.app.network import VirtualMesh
from meshbot.sim.app.report import render_report
from meshbot.sim.app.topology import TopologyError, bundled_topologies, load_topology

logger = logging.getLogger(__name__)

STOP_POLL_S = 0.5  # how often the main thread looks at the stop flag (signals land between waits)


def register(subparsers: Any) -> None:
    """Add the `sim` subcommand to the main parser's subparsers."""
    sim = subparsers.add_parser("sim", help="run a virtual Meshtastic mesh on 127.0.0.1 (no radio needed)")
    sim.add_argument(
        "--topology",
        metavar="NAME|FILE",
        help=f"a bundled topology ({', '.join(bundled_topologies())}) or a topology TOML file "
        "(default: [sim] topology of the config, \"demo\")",
    )
    sim.add_argument("--config", type=Path, help=configfile.HELP)
    sim.add_argument("--handset", metavar="NAME", help="type messages as this handset node (a REPL)")
    sim.add_argument("--time-scale", type=float, metavar="X", help="simulated seconds per real second")
    sim.add_argument("--seed", type=int, metavar="N", help="seed for loss and contention")
    sim.add_argument("--report-every", type=float, metavar="S", help="print the mesh report every S simulated seconds")
    sim.add_argument("--bot", action="store_true", help="also run the bot's daemon on the bot node (bundled model)")
    sim.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sim.set_defaults(func=cmd_sim)


def cmd_sim(
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the mesh until SIGINT/SIGTERM (or /quit at the handset); print the report; return the exit code."""
    out = stdout or sys.stdout
    if stdout is None:  # run as a command: set up logging once, on stderr
        logs.configure(args.log_level)
    if args.time_scale is not None and args.time_scale <= 0:
        out.write("meshbot sim: --time-scale must be positive\n")
        return 2
    cfg, cfg_path = configfile.load(getattr(args, "config", None))
    configfile.log_source(cfg_path)
    source = args.topology or cfg.sim.topology  # the flag wins over [sim] topology / MESHBOT_SIM_TOPOLOGY
    try:
        topology = load_topology(source, seed=args.seed, time_scale=args.time_scale)
        if args.handset is not None:
            topology.node(args.handset)
    except TopologyError as exc:
        out.write(f"meshbot sim: {exc}\n")
        return 2
    except KeyError:
        out.write(f"meshbot sim: no node {args.handset!r} in {source}\n")
        return 2
    stop = stop or threading.Event()
    interrupts.install(stop)  # a no-op off the main thread (tests call us from others)
    mesh = VirtualMesh(topology)
    daemon = None
    mesh.start()
    code = 0
    try:
        out.write(describe_mesh(mesh, bot_starts=args.bot) + "\n")
        out.flush()
        if args.bot:
            daemon, code = _start_bot(cfg, mesh, out, stop)
            if daemon is None:
                return code
        if args.report_every:
            _start_reports(mesh, args.report_every, stop, out)
        if args.handset is not None:
            _start_console(mesh, args.handset, stdin or sys.stdin, out, stop)
        while not stop.wait(STOP_POLL_S):
            pass
    finally:
        if daemon is not None:
            from meshbot.app.runner import STOP_GRACE_S  # the same grace as `meshbot run`

            daemon.stop(grace_s=STOP_GRACE_S)
        report = mesh.report()
        mesh.stop()
        out.write(render_report(report) + "\n")
        out.flush()
    return code


def describe_mesh(mesh: VirtualMesh, bot_starts: bool = False) -> str:
    """Who is where, and how to talk to it (with `bot_starts`, no line on starting a bot: --bot starts one)."""
    m = mesh.topology.mesh
    lines = [
        f"virtual mesh: {len(mesh.topology.nodes)} nodes, {m.region} {m.modem_preset}, hop limit {m.hop_limit}, "
        f"seed {m.seed}, {m.time_scale:g}x real time"
    ]
    for spec in mesh.topology.nodes:
        node = mesh.node(spec.name)
        lines.append(
            f"  {spec.name:<14} {node_id(spec.node_num)}  {spec.role:<8} 127.0.0.1:{node.port}"
            f"  neighbours: {', '.join(sorted(_neighbours(mesh, spec.name))) or '-'}"
        )
    handset = next((s for s in mesh.topology.nodes if s.role == "handset"), None)
    broker = m.mqtt
    if bot_starts:
        dest = node_id(mesh.bot.node_num) if mesh.bot_num is not None else "<the bot's node id, printed below>"
    elif mesh.bot_num is None and broker is not None:  # no radio for the bot: it joins through the gateways
        lines.append(
            f"bot: MESHBOT_RADIO_TRANSPORT=mqtt MESHBOT_MQTT_HOST={broker.host} MESHBOT_MQTT_PORT={broker.port} "
            f"MESHBOT_MQTT_ROOT={broker.root} MESHBOT_MQTT_CHANNEL={broker.channel} {script('meshbot')} run"
        )
        dest = "<the bot's node id, logged at its start>"
    else:
        lines.append(f"bot: {script('meshbot')} run --host 127.0.0.1:{mesh.bot.port}")
        dest = node_id(mesh.bot.node_num)
    if handset is not None:
        port = mesh.node(handset.name).port
        lines.append(f"talk: {ask_command(port, 'what is lora?', dest)}")
        lines.append(f"list the mesh: {nodes_command(port)}")
    return "\n".join(lines)


def _neighbours(mesh: VirtualMesh, name: str) -> set[str]:
    return {other for pair in mesh.topology.neighbour_pairs() if name in pair for other in pair if other != name}


def _start_console(mesh: VirtualMesh, handset: str, inp: TextIO, out: TextIO, stop: threading.Event) -> None:
    console = HandsetConsole(mesh, handset, out)
    console.attach()

    def repl() -> None:
        try:
            console.run(inp)
        finally:
            stop.set()  # /quit or end of input ends the run

    # A daemon thread: a blocked read of stdin must not keep the process alive after Ctrl-C.
    threading.Thread(target=repl, name="sim-console", daemon=True).start()


def _start_reports(mesh: VirtualMesh, every_s: float, stop: threading.Event, out: TextIO) -> None:
    scale = float(getattr(mesh.clock, "scale", 1.0))

    def loop() -> None:
        while not stop.wait(every_s / scale):
            out.write(render_report(mesh.report()) + "\n")
            out.flush()

    threading.Thread(target=loop, name="sim-reports", daemon=True).start()


def _start_bot(cfg: Config, mesh: VirtualMesh, out: TextIO, stop: threading.Event) -> tuple[Any, int]:
    """The daemon with the configured (default: bundled) model, on the mesh's clock, attached to the bot node.

    Returns (daemon, 0), or (None, exit code) when it did not start: 0 if a stop came first, else 1.
    """
    from meshbot.app.compose import build_daemon
    from meshbot.app.preflight import require_model
    from meshbot.app.runner import STARTUP_ERRORS, demo_config

    cfg = demo_config(cfg)  # as `make run` does: the example notes (unless the config names some), a fresh store

    broker = mesh.topology.mesh.mqtt
    if mesh.bot_num is None and broker is not None:  # a bot with no radio: through the gateways' broker
        mqtt = cfg.mqtt.model_copy(
            update={
                "host": broker.host,
                "port": broker.port,
                "root": broker.root,
                "channel": broker.channel,
                "psk": broker.psk,
            }
        )
        cfg = cfg.model_copy(update={"radio": cfg.radio.model_copy(update={"transport": "mqtt"}), "mqtt": mqtt})
    else:
        radio = cfg.radio.model_copy(update={"host": f"127.0.0.1:{mesh.bot.port}", "port": None, "ble": None})
        cfg = cfg.model_copy(update={"radio": radio})
    out.write("loading the model and starting the bot...\n")
    out.flush()
    try:
        require_model(cfg)
        daemon = build_daemon(cfg, clock=mesh.clock, stop=stop)
    except STARTUP_ERRORS as exc:
        if stop.is_set():
            return None, 0
        out.write(f"meshbot sim: the bot cannot start: {exc}\n")
        return None, 1
    daemon.start()
    if mesh.bot_num is None:
        mesh.remote_bot = daemon.node.node_num
    out.write(f"bot up as {node_id(daemon.node.node_num)}\n")
    return daemon, 0
