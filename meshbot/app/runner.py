"""`meshbot run`: choose the radio (or the virtual mesh demo), load the model, run until stopped."""

from __future__ import annotations

import logging
import threading

from meshbot.core.clock import SystemClock
from meshbot.core.config import Config
from meshbot.core.domain import RadioUnavailable
from meshbot.models.llama import load_model
from meshbot.radios.meshtastic_lib import MeshtasticRadio, detect_serial_ports
from meshbot.service.daemon import Daemon
from meshbot.storage.store import Store

log = logging.getLogger(__name__)


def _with_radio(cfg: Config, **radio: object) -> Config:
    return cfg.model_copy(update={"radio": cfg.radio.model_copy(update=radio)})


def choose_radio(cfg: Config, force_sim: bool) -> tuple[Config, bool]:
    """Resolve where the radio is; True in the second place when the virtual mesh must be started."""
    if force_sim:
        return cfg, True
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


def run_daemon(cfg: Config, stop: threading.Event, force_sim: bool = False) -> int:
    """Run the daemon until `stop` is set; returns the exit code."""
    cfg, use_sim = choose_radio(cfg, force_sim)
    demo = None
    if use_sim:
        from meshbot.sim.app.demo import Demo

        demo = Demo()
        demo.start()
        cfg = _with_radio(cfg, host=f"127.0.0.1:{demo.bot_port}", port=None, ble=None)
    model = load_model(cfg.model)
    radio = MeshtasticRadio(cfg.radio, cfg.mesh.hop_limit)
    daemon = Daemon(cfg, radio, model, SystemClock(), store=Store(cfg.store.path))
    # A stop while the radio is still connecting must cancel the (forever) retries.
    threading.Thread(target=lambda: stop.wait() or radio.close(), name="meshbot-stopwatch", daemon=True).start()
    try:
        daemon.start()
        if demo is not None:
            demo.after_daemon_started()
        while not stop.wait(0.5):
            pass
    except RadioUnavailable as exc:
        log.error("radio unavailable: %s", exc)
        return 1
    finally:
        daemon.stop()
        if demo is not None:
            demo.stop()
    return 0
