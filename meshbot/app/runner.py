"""`meshbot run`: choose the radio (or the virtual mesh demo), load the model, run until stopped."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from meshbot.app.compose import build_daemon
from meshbot.app.preflight import require_model
from meshbot.app.stores import demo_store_path
from meshbot.core.config import Config, ConfigError
from meshbot.core.domain import RadioUnavailable
from meshbot.core.events import Event
from meshbot.models.base import ModelError
from meshbot.radios.meshtastic_lib import detect_serial_ports
from meshbot.sim.app.demo import Demo
from meshbot.sim.app.topology import TopologyError
from meshbot.storage.lock import StoreLock, StoreLocked

log = logging.getLogger(__name__)

# Failures at start-up that end with one clear line and exit code 1, never a traceback.
STARTUP_ERRORS = (ModelError, RadioUnavailable, TopologyError, ConfigError, OSError)
# On SIGTERM the reply in progress gets this long to finish; systemd and docker wait 10 s before SIGKILL.
STOP_GRACE_S = 5.0


def _with_radio(cfg: Config, **radio: object) -> Config:
    return cfg.model_copy(update={"radio": cfg.radio.model_copy(update=radio)})


def _fresh_demo_store(cfg: Config) -> Config:
    """The config with the demo's own store, emptied first."""
    # Each run is a new virtual mesh, so nothing the bot remembered of the last one applies: kept
    # apart from the real store, a radio run in the same folder never resumes answers meant for
    # virtual nodes, and the demo's sample question is never taken for a repeat of the last run's.
    path = demo_store_path(cfg.store.path)
    if path != ":memory:":
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).expanduser().unlink(missing_ok=True)
    log.info("demo: the bot keeps this run's state in %s", path)
    return cfg.model_copy(update={"store": cfg.store.model_copy(update={"path": path})})


def choose_radio(cfg: Config, force_sim: bool) -> tuple[Config, bool]:
    """Resolve where the radio is; True in the second place when the virtual mesh must be started."""
    if force_sim:
        return cfg, True
    if cfg.radio.transport != "meshtastic":
        return cfg, False  # no device to find: the transport says where the mesh is
    if cfg.radio.port or cfg.radio.host or cfg.radio.ble:
        return cfg, False
    ports = detect_serial_ports()
    if len(ports) == 1:
        log.info("found a radio on %s", ports[0])
        return _with_radio(cfg, port=ports[0]), False
    if ports:
        raise SystemExit(f"meshbot: several serial radios found ({', '.join(ports)}): pick one with --port")
    if cfg.radio.when_no_radio == "fail":
        raise SystemExit("meshbot: no radio found; give --port, --host or --ble")
    log.info("no radio attached: starting the virtual mesh demo")
    return cfg, True


def _start_demo(cfg: Config) -> Demo:
    """The demo's virtual mesh, up; a topology that cannot be used is named with the setting that chose it."""
    demo = Demo(cfg.sim.topology)
    try:
        demo.start()
    except TopologyError as exc:
        raise TopologyError(f"sim.topology (MESHBOT_SIM_TOPOLOGY): {exc}") from exc
    return demo


def with_example_knowledge(cfg: Config) -> Config:
    """The demo's config: the bundled example notes when the operator named none."""
    if cfg.knowledge.paths or not cfg.knowledge.enabled:
        return cfg
    from meshbot.knowledge_example import FOLDER

    return cfg.model_copy(update={"knowledge": cfg.knowledge.model_copy(update={"paths": (str(FOLDER),)})})


def demo_config(cfg: Config) -> Config:
    """The bot's config on a virtual mesh (`run` with no radio, `sim --bot`): its own fresh store, the example notes."""
    return with_example_knowledge(_fresh_demo_store(cfg))


def lock_store(cfg: Config, use_sim: bool) -> StoreLock | None:
    """The lock on the store this run will use (None for ":memory:"); StoreLocked when another daemon has it."""
    path = demo_store_path(cfg.store.path) if use_sim else cfg.store.path
    if path == ":memory:":
        return None
    lock = StoreLock(path)
    lock.acquire()
    return lock


def run_daemon(cfg: Config, stop: threading.Event, force_sim: bool = False) -> int:
    """Run the daemon until `stop` is set; returns the exit code (1: it could not start, 2: store in use)."""
    try:
        require_model(cfg)  # before the virtual mesh: a missing model ends start-up with one line, nothing else
        cfg, use_sim = choose_radio(cfg, force_sim)
        lock = lock_store(cfg, use_sim)  # before the demo empties its store, and before the radio connects
    except StoreLocked as exc:
        log.error("cannot start: %s", exc, extra={"event": Event.STORE_LOCKED})
        return 2
    except STARTUP_ERRORS as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        return _run_locked(cfg, stop, use_sim)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(cfg: Config, stop: threading.Event, use_sim: bool) -> int:
    demo = None
    try:
        if use_sim:
            demo = _start_demo(cfg)
            cfg = _with_radio(cfg, host=f"127.0.0.1:{demo.bot_port}", port=None, ble=None)
            cfg = demo_config(cfg)
        daemon = build_daemon(cfg, stop=stop)
    except STARTUP_ERRORS as exc:
        if demo is not None:
            demo.stop()
        if stop.is_set():
            log.info("stopped while starting", extra={"event": Event.STOPPED})
            return 0
        log.error("cannot start: %s", exc)
        return 1
    try:
        daemon.start()
        if demo is not None:
            demo.after_daemon_started()
        while not stop.wait(0.5):
            pass
    finally:
        daemon.stop(grace_s=STOP_GRACE_S)
        if demo is not None:
            demo.stop()
    return 0
