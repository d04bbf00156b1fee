"""The first hour of a new user: each stumble of issue 19, as that user would meet it, and its fix."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meshbot.app.cli import main
from meshbot.app.runner import demo_config
from meshbot.core import limits
from meshbot.core.config import ConfigError, load_config
from meshbot.core.policy import Ignore, Policy
from meshbot.knowledge_example import FOLDER as EXAMPLE_NOTES
from meshbot.radios.mqtt.codec import channel_kind, is_default_public
from meshbot.sim.app.demo import Demo
from meshbot.sim.node.records import HeardPacket
from meshbot.storage.knowledge import KnowledgeIndex
from meshbot.storage.store import Store
from tests.command_proc import REPO, Command, clean_env, dev_tree
from tests.fakes import broadcast

START_S = 60.0  # real seconds for an interpreter to come up on a busy machine


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`meshbot ARGV` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meshbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ----- errors: one line, exit code 2 --------------------------------------------------------------


def test_ask_with_an_unknown_backend_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "ask", "--backend", "nope", "what is lora?")
    assert code == 2 and out == ""
    assert err == "meshbot: model.backend: unknown value 'nope'; known: 'llama_cpp', 'openai'\n"


def test_eval_with_an_unknown_backend_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHBOT_MODEL_BACKEND", "nope")
    code, _, err = cli(capsys, "eval", "--limit", "1")
    assert code == 2 and err.count("\n") == 1 and "model.backend: unknown value 'nope'" in err


def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`meshbot status | head -5` once head has gone: no traceback, the exit a Unix tool gives (SIGPIPE)."""
    Store(tmp_path / "meshbot.db").close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write, as `head` is after its lines
    try:
        done = subprocess.run(
            dev_tree("status"),
            cwd=tmp_path,
            env=clean_env({"PYTHONPATH": str(REPO)}, tmp_path),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=START_S,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141  # 128 + SIGPIPE


def test_status_finds_the_store_of_the_demo_that_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make run` keeps its state in meshbot-demo.db: `meshbot status` in that folder reads it while it runs."""
    demo = Store(tmp_path / "meshbot-demo.db")
    demo.heartbeat(os.getpid(), 0, False)  # what the demo's daemon writes every 5 s
    config = config_file(tmp_path, f'[store]\npath = "{tmp_path / "meshbot.db"}"\n')
    try:
        code, out, err = cli(capsys, "status", "--config", str(config))
        assert out.startswith(f"running: pid {os.getpid()} on "), out + err
        assert f"store: {tmp_path / 'meshbot-demo.db'} (the demo's" in out
        code, out, err = cli(capsys, "status", "--config", str(config), "--store", str(tmp_path / "meshbot.db"))
        assert code == 1 and out == "" and "--store" in err  # asked for that one: it is not there
    finally:
        demo.close()


# ----- config check: the files the config names ---------------------------------------------------


def test_config_check_on_a_missing_model_fails_naming_model_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, f'[model]\npath = "{tmp_path / "models" / "mistral.gguf"}"\n')
    code, out, err = cli(capsys, "config", "check", str(path))
    assert code == 2 and "config OK" not in out
    assert err.count("\n") == 1 and "model.path" in err and "mistral.gguf is not a file" in err


@pytest.mark.parametrize(
    "content, says",
    [
        (b"<html>404 Not Found</html>", "not a GGUF model file (it starts with b'<htm'"),
        (b"GGUF\x03\x00", "only 6 bytes: too short for a GGUF model"),
        (b"GGUF" + (9).to_bytes(4, "little") + bytes(16), "GGUF version 9"),
    ],
)
def test_config_check_reads_the_model_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str
) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(content)
    code, _, err = cli(capsys, "config", "check", str(config_file(tmp_path, f'[model]\npath = "{model}"\n')))
    assert code == 2 and f"model.path {model}: {says}" in err


def test_config_check_accepts_a_real_gguf_header_without_loading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meshbot.models.llama import bundled_model_path

    path = config_file(tmp_path, f'[model]\npath = "{bundled_model_path()}"\n')
    code, out, _ = cli(capsys, "config", "check", str(path))
    assert code == 0 and out.startswith("config OK")


def test_config_check_on_a_missing_notes_folder_fails_naming_knowledge_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, f'[knowledge]\npaths = ["{tmp_path / "notes"}"]\n')
    code, _, err = cli(capsys, "config", "check", str(path))
    assert code == 2 and f"knowledge.paths: {tmp_path / 'notes'}: no such folder or file" in err


def test_a_list_given_as_a_plain_env_string_is_told_its_json_form() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"MESHBOT_KNOWLEDGE_PATHS": "/srv/notes"})
    assert """MESHBOT_KNOWLEDGE_PATHS takes a JSON list, e.g. MESHBOT_KNOWLEDGE_PATHS='["/srv/notes"]'""" in str(
        caught.value
    )
    assert load_config(environ={"MESHBOT_KNOWLEDGE_PATHS": '["/srv/notes"]'}).knowledge.paths == ("/srv/notes",)


def test_run_with_a_missing_model_fails_before_starting_the_virtual_mesh(tmp_path: Path) -> None:
    env = clean_env({"PYTHONPATH": str(REPO), "MESHBOT_MODEL_PATH": str(tmp_path / "gone.gguf")}, tmp_path)
    with Command(dev_tree("run", "--sim"), tmp_path, env) as run:
        assert run.finish(START_S) == 1, run.transcript()
    errors = [line for line in run.stderr if " ERROR " in line]
    assert len(errors) == 1 and "cannot start: model.path" in errors[0], run.transcript()
    assert run.stdout == [], run.transcript()  # no mesh up, no mesh report
    assert not any("mesh up" in line for line in run.stderr), run.transcript()


def test_a_missing_notes_folder_is_warned_about_once_not_at_every_sync(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = KnowledgeIndex()
    missing = tmp_path / "notes"
    caplog.set_level(logging.WARNING, logger="meshbot.storage.knowledge")
    for _ in range(3):
        index.sync([missing])
    assert [r.getMessage() for r in caplog.records] == [f"knowledge path {missing} is not a folder or file: skipped"]
    missing.mkdir()  # it came back, then went away again: that is news once more
    index.sync([missing])
    missing.rmdir()
    index.sync([missing])
    assert len(caplog.records) == 2


# ----- a private channel on MQTT ------------------------------------------------------------------


def test_mqtt_tells_the_default_public_channel_from_a_private_one() -> None:
    assert is_default_public("LongFast", b"\x01") and is_default_public("MediumFast", b"")
    assert not is_default_public("Demo", b"\x01")  # its own name
    assert not is_default_public("LongFast", bytes(range(16)))  # its own key
    assert "a private channel" in channel_kind("Demo", b"\x01")
    assert "the mesh's default public channel" in channel_kind("LongFast", b"\x01")


@pytest.mark.parametrize("channel, psk, public", [("LongFast", "AQ==", frozenset({0})), ("Demo", "AQ==", frozenset())])
def test_the_mqtt_transport_reports_whether_its_channel_is_the_default_public_one(
    channel: str, psk: str, public: frozenset[int], caplog: pytest.LogCaptureFixture
) -> None:
    """Policy refuses only what the transport calls public: a private channel on MQTT is answered."""
    from meshbot.core.clock import SystemClock
    from meshbot.radios.mqtt.transport import from_config

    cfg = load_config(overrides={"mqtt.channel": channel, "mqtt.psk": psk, "mqtt.port": 1}, environ={})
    radio = from_config(cfg, Store(":memory:"), SystemClock())
    assert radio.local_node().public_channels == public
    policy = Policy(cfg.policy, 0xB0B, "BOT", public_channels=radio.local_node().public_channels)
    decision = policy.judge(broadcast("!ai what is lora?"))
    assert isinstance(decision, Ignore) == bool(public)


@pytest.mark.parametrize(
    "channel, says",
    [
        ("Demo", "channel Demo (its own name): a private channel, not the mesh's default public one"),
        ("LongFast", "channel LongFast with the default key: the mesh's default public channel"),
    ],
)
def test_the_mqtt_transport_says_at_start_whether_its_channel_is_public(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, channel: str, says: str
) -> None:
    from meshbot.core.clock import SystemClock
    from meshbot.radios.mqtt.transport import from_config
    from tests.mqtt_support import Broker, mqtt_config

    broker = Broker(tmp_path)
    broker.start()
    radio = from_config(mqtt_config(broker.port, **{"mqtt.channel": channel}), Store(":memory:"), SystemClock())
    caplog.set_level(logging.INFO, logger="meshbot.radios.mqtt.transport")
    try:
        radio.start(lambda packet: None, lambda event: None)
    finally:
        radio.close()
        broker.stop()
    told = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "radio-channel"]
    assert told == [says]


def test_a_public_channel_refusal_says_why_the_channel_counts_as_public() -> None:
    cfg = load_config(environ={}).policy
    told = Policy(cfg, 0xB0B, "BOT", public_channels=frozenset({0})).judge(broadcast("!ai what is lora?"))
    assumed = Policy(cfg, 0xB0B, "BOT").judge(broadcast("!ai what is lora?", packet_id=2))
    assert isinstance(told, Ignore) and isinstance(assumed, Ignore)
    assert "is the mesh's default public channel" in told.detail and "set public = true" in told.detail
    assert "the radio did not say" in assumed.detail


# ----- the demo and the sim -----------------------------------------------------------------------


def test_sim_bot_gets_the_notes_the_demo_gets() -> None:
    cfg = demo_config(load_config(environ={}))
    assert cfg.knowledge.paths == (str(EXAMPLE_NOTES),)
    assert cfg.store.path.endswith("meshbot-demo.db")


def _texts_from(node_num: int, heard: list[HeardPacket], to: int) -> list[str]:
    return [h.text for h in heard if h.sender == node_num and h.to == to and h.text]


@pytest.mark.model
@pytest.mark.slow
def test_the_demo_leaves_the_whole_burst_to_the_user(real_daemon: Callable[..., object]) -> None:
    out = io.StringIO()
    demo = Demo("demo", out=out, stdin=io.StringIO(), dm_after_s=0.5, channel_after_s=1.0)
    demo.start()
    try:
        real_daemon(demo.bot_port, **{"model.max_tokens_cap": 16, "join.window_s": 0})
        demo.after_daemon_started()
        mesh = demo.mesh
        assert mesh is not None and demo.console is not None
        bot, alice, bob = mesh.bot.node_num, mesh.node("Alice"), mesh.node("Bob")
        # The neighbour's sample questions are answered first (one DM, one on the channel).
        bob.received_log.wait_for(lambda heard: bool(_texts_from(bot, heard, bob.node_num)), 120)
        alice.received_log.wait_for(lambda heard: bool(_texts_from(bot, heard, limits.BROADCAST_NUM)), 120)
        burst = int(load_config(environ={}).limits.per_node_burst)
        for n in range(burst):
            demo.console.send(f"question {n + 1}: what is lora?", to=bot)
            time.sleep(0.2)
        heard = alice.received_log.wait_for(lambda h: len(_texts_from(bot, h, alice.node_num)) >= burst, 240)
    finally:
        demo.stop()
    answers = _texts_from(bot, heard, alice.node_num)
    assert not any("too fast" in text for text in answers), answers
    assert "Bob (!0b0b0000) asks it a few sample questions" in out.getvalue()


def test_the_demo_prints_a_command_that_works_from_the_checkout(tmp_path: Path) -> None:
    from meshbot.sim.app.commands import ask_command, script

    assert ask_command(4403, "your question", "!0bb00001").endswith(
        "handset --host 127.0.0.1:4403 --to '!0bb00001' 'your question'"
    )
    beside = Path(sys.executable).parent / "meshbot"
    assert Path(script("meshbot")).resolve() == beside.resolve() or script("meshbot") == "meshbot"
