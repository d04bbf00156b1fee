"""The openai backend's pieces without a real server: config, HTTP error mapping (httpx.MockTransport),
stream parsing, the key kept secret, and the worker's retry, apology and cut-off (fake radio, virtual time)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshbot.app.status import model_status
from meshbot.core.config import ConfigError, ModelConfig, load_config
from meshbot.core.domain import ChatTurn, Generation, GenerationStats
from meshbot.core.events import Event, Reason
from meshbot.core.fragmenter import looks_like_fragment
from meshbot.models.base import ModelStalled, ModelUnavailable
from meshbot.models.openai_api import OpenAIModel
from meshbot.service.answering import AnswerStream
from meshbot.service.worker import CUT_MARKER, MODEL_APOLOGY
from meshbot.storage.store import QueryState
from tests.conftest import wait_until
from tests.fakes import AI_TAG, ALICE, BOB, FakeRadio, FlakyServerModel, dm
from tests.openai_servers import free_port

URL = "http://models.lan:8080/v1"
SECRET = "sk-test-do-not-log-4242"
LONG_ANSWER = ("LoRa is a long range radio modulation for small packets. " * 12).strip()


def cfg_for(**model: object) -> ModelConfig:
    return load_config(overrides={"model.backend": "openai", "model.base_url": URL, **model}, environ={}).model


def served(handler: Callable[[httpx.Request], httpx.Response], **model: object) -> OpenAIModel:
    return OpenAIModel(cfg_for(**{f"model.{k}": v for k, v in model.items()}), transport=httpx.MockTransport(handler))


def sse(*chunks: object, done: bool = True) -> httpx.Response:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + (["data: [DONE]\n\n"] if done else [])
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text="".join(lines))


def delta(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


REQUEST = Generation((ChatTurn("system", "be brief"), ChatTurn("user", "hi")), max_tokens=64, seed=7)


# -- config ----------------------------------------------------------------------------------------------
def test_the_two_acceptance_variables_select_the_backend() -> None:
    env = {"MESHBOT_MODEL_BACKEND": "openai", "MESHBOT_MODEL_BASE_URL": "http://127.0.0.1:9/v1/"}
    cfg = load_config(environ=env)
    assert (cfg.model.backend, cfg.model.base_url) == ("openai", "http://127.0.0.1:9/v1")
    assert load_config(environ={}).model.backend == "llama_cpp"


def test_openai_without_a_base_url_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        load_config(environ={"MESHBOT_MODEL_BACKEND": "openai"})
    with pytest.raises(ConfigError, match="model.base_url"):
        load_config(environ={"MESHBOT_MODEL_BASE_URL": "10.0.0.5:8080"})


def test_the_key_never_reaches_a_log_line_or_the_config_dump(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    model = served(handler, api_key=SECRET, api_model="m")
    with pytest.raises(ModelUnavailable) as err:
        list(model.stream(REQUEST, GenerationStats()))
    assert seen == [f"Bearer {SECRET}"]
    cfg = load_config(overrides={"model.api_key": SECRET}, environ={})
    shown = [r.getMessage() for r in caplog.records] + [str(err.value), cfg.model_dump_json(), repr(cfg)]
    assert not [line for line in shown if SECRET in line]


def test_the_key_may_come_from_a_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHBOT_TEST_SERVER_KEY", SECRET)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return sse(delta("ok", "stop"))

    list(served(handler, api_key_env="MESHBOT_TEST_SERVER_KEY", api_model="m").stream(REQUEST, GenerationStats()))
    assert seen == [f"Bearer {SECRET}"]


# -- the request and the stream ----------------------------------------------------------------------------
def test_the_request_carries_the_same_turns_budget_and_seed() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == httpx.URL(f"{URL}/chat/completions")
        bodies.append(json.loads(request.content))
        return sse(delta("Hello"), delta(" there."), delta("", "stop"))

    stats = GenerationStats()
    pieces = list(served(handler, api_model="big-model").stream(REQUEST, stats))
    assert pieces == ["Hello", " there."]
    body = bodies[0]
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (body["model"], body["max_tokens"], body["seed"], body["stream"]) == ("big-model", 64, 7, True)
    assert stats.completion_tokens == 2 and stats.first_token_s is not None


def test_without_api_model_the_first_listed_model_is_used_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "qwen2.5:7b"}, {"id": "other"}]})
        asked.append(json.loads(request.content)["model"])
        return sse(delta("ok", "stop"))

    model = served(handler)
    list(model.stream(REQUEST, GenerationStats()))
    list(model.stream(REQUEST, GenerationStats()))
    assert asked == ["qwen2.5:7b", "qwen2.5:7b"]
    chosen = [r for r in caplog.records if getattr(r, "event", None) == Event.MODEL_CHOSEN]
    assert len(chosen) == 1 and "qwen2.5:7b" in chosen[0].getMessage()


@pytest.mark.parametrize(
    ("status", "retryable", "fix"),
    [
        (401, False, "model.api_key"),
        (403, False, "model.api_key"),
        (404, False, "model.api_model"),
        (429, True, "rate limit"),
        (500, True, "server's own log"),
        (503, True, "server's own log"),
        (400, False, "context"),
    ],
)
def test_http_errors_say_what_the_operator_must_fix(status: int, retryable: bool, fix: str) -> None:
    model = served(lambda request: httpx.Response(status, json={"error": {"message": "nope"}}), api_model="m")
    with pytest.raises(ModelUnavailable) as err:
        list(model.stream(REQUEST, GenerationStats()))
    assert err.value.retryable is retryable and err.value.status == status
    assert fix in str(err.value) and f"HTTP {status}: nope" in str(err.value) and URL in str(err.value)


def test_a_server_that_is_not_running_is_unavailable_not_a_crash() -> None:
    model = OpenAIModel(cfg_for(**{"model.base_url": f"http://127.0.0.1:{free_port()}/v1", "model.api_model": "m"}))
    with pytest.raises(ModelUnavailable, match="cannot connect.*model.base_url") as err:
        list(model.stream(REQUEST, GenerationStats()))
    assert err.value.retryable


def test_a_stream_that_ends_early_is_a_stall_once_text_came_and_unavailable_before() -> None:
    model = served(lambda request: sse(delta("Half an"), delta(" answer"), done=False), api_model="m")
    pieces: list[str] = []
    with pytest.raises(ModelStalled, match="after 2 piece"):
        pieces.extend(model.stream(REQUEST, GenerationStats()))
    assert pieces == ["Half an", " answer"]
    with pytest.raises(ModelUnavailable):
        list(served(lambda request: sse(done=False), api_model="m").stream(REQUEST, GenerationStats()))


def test_a_stream_that_says_done_without_a_finish_reason_was_interrupted_not_complete() -> None:
    # llama_cpp.server's default when a second worker's request arrives: the first answer just stops.
    model = served(lambda request: sse(delta("Half an"), delta(" answer")), api_model="m")
    with pytest.raises(ModelStalled, match="--interrupt_requests false"):
        list(model.stream(REQUEST, GenerationStats()))
    complete = served(lambda request: sse(delta("Whole."), delta("", finish="stop")), api_model="m")
    assert list(complete.stream(REQUEST, GenerationStats())) == ["Whole."]


def test_a_timeout_between_chunks_before_any_text_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ModelUnavailable, match="model.chunk_timeout_s"):
        list(served(handler, api_model="m").stream(REQUEST, GenerationStats()))


# -- the cut-off marker: a property of every stall point ---------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    words=st.lists(st.text(min_size=1, max_size=12).filter(str.strip), min_size=1, max_size=120),
    stall=st.integers(min_value=1, max_value=120),
    budget=st.sampled_from([60, 120, 200]),
    cap=st.integers(min_value=1, max_value=5),
)
def test_a_cut_off_answer_fits_and_ends_with_the_marker(words: list[str], stall: int, budget: int, cap: int) -> None:
    text = " ".join(words)
    model = FlakyServerModel(stall_after=min(stall, len(text.split(" ")) - 1))  # the fake yields one word a piece
    model.queue(text)
    model.failures.append(ModelStalled("stalled"))
    answer = AnswerStream(model, REQUEST, budget, cap)
    fragments = []
    with pytest.raises(ModelStalled):
        fragments.extend(answer)
    fragments += answer.cut_off(CUT_MARKER)
    assert [f.index for f in fragments] == list(range(1, len(fragments) + 1))
    assert all(f.nbytes <= budget for f in fragments)
    shown = fragments[-1].text if not answer.capped else answer.remainder
    assert shown.endswith(CUT_MARKER.strip())
    assert CUT_MARKER.strip() not in answer.text


# -- the worker: retry, apology, cut-off (fake radio, virtual time) ------------------------------------------
@pytest.fixture
def server_model(clock) -> FlakyServerModel:
    return FlakyServerModel(clock)


@pytest.fixture
def server_daemon(make_daemon, server_model: FlakyServerModel, radio: FakeRadio):
    from meshbot.app.compose import build_daemon
    from meshbot.storage.store import Store

    made = []

    def make(**overrides: object):
        # join.window_s 0: one-line test questions are answered at once, not held for a second part
        base = {"model.retry_for_s": 60, "model.retry_backoff_s": 2, "join.window_s": 0}
        cfg = load_config(overrides={**base, **overrides}, environ={})
        daemon = build_daemon(cfg, radio=radio, model=server_model, clock=radio.clock, store=Store(":memory:"))
        daemon.start()
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop(grace_s=1.0)


def down(n: int) -> list[ModelUnavailable]:
    return [ModelUnavailable("the model server at x: cannot connect") for _ in range(n)]


def retry_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [r.delay_s for r in caplog.records if getattr(r, "event", None) == Event.MODEL_RETRY]


def test_a_short_outage_is_waited_out_and_the_question_answered(
    server_daemon, server_model, radio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    server_model.failures.extend(down(3))
    server_model.queue(LONG_ANSWER)
    daemon = server_daemon()
    radio.receive(dm("what is lora?"))
    wait_until(lambda: daemon.idle() and radio.texts())
    assert server_model.calls == 4
    assert radio.texts()[0].startswith("1/+") and MODEL_APOLOGY not in radio.texts()
    assert retry_delays(caplog) == [2, 4, 8]  # the backoff doubles
    assert [r.event for r in caplog.records if r.name.endswith("outage")][-1] == Event.MODEL_BACK
    assert model_status(daemon.cfg, daemon.store)["last_call_ok"] is True


def test_a_long_outage_gives_each_waiting_question_one_apology(
    server_daemon, server_model, radio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshbot")
    server_model.failures.extend(down(100))
    daemon = server_daemon(**{"model.retry_for_s": 30, "model.retry_max_backoff_s": 8})
    radio.receive(dm("first question", packet_id=11))
    radio.receive(dm("second question", sender=BOB, packet_id=12))
    wait_until(lambda: daemon.idle() and len(radio.sent) >= 2)
    assert [(s.message.text.removeprefix(AI_TAG), s.message.dest, s.message.reply_id) for s in radio.sent] == [
        (MODEL_APOLOGY, ALICE, 11),
        (MODEL_APOLOGY, BOB, 12),
    ]
    assert retry_delays(caplog)[:4] == [2, 4, 8, 8]  # capped
    assert sum(retry_delays(caplog)) <= 30  # bounded by retry_for_s
    assert server_model.calls <= 10  # bounded: the second question gets one try, not a second window
    failed = [r for r in caplog.records if getattr(r, "reason", None) == Reason.MODEL_UNAVAILABLE]
    assert len(failed) == 2
    assert len([r for r in caplog.records if getattr(r, "event", None) == Event.MODEL_ERROR]) == 1
    for query_id in (1, 2):
        stored = daemon.store.get(query_id)
        assert stored is not None and stored.state is QueryState.FAILED
    assert model_status(daemon.cfg, daemon.store)["last_call_ok"] is False


def test_a_wrong_key_is_not_retried(server_daemon, server_model, radio) -> None:
    server_model.failures.append(ModelUnavailable("refused: set model.api_key", retryable=False, status=401))
    daemon = server_daemon()
    radio.receive(dm("hello?"))
    wait_until(lambda: daemon.idle() and radio.sent)
    assert server_model.calls == 1 and radio.texts() == [MODEL_APOLOGY]


def test_a_stall_after_fragments_went_on_air_ends_with_the_marker_and_resends_nothing(
    server_daemon, server_model, radio
) -> None:
    server_model.queue(LONG_ANSWER)
    server_model.failures.append(ModelStalled("the model server at x stopped mid-answer"))
    server_model.stall_after = 45  # about 1.5 fragments of LONG_ANSWER
    daemon = server_daemon()
    radio.receive(dm("what is lora?"))
    wait_until(lambda: daemon.idle() and len(radio.sent) >= 2)
    texts = radio.texts()
    assert server_model.calls == 1
    assert [t.split(" ", 1)[0] for t in texts] == ["1/+", "2/2"]
    assert texts[1].endswith(CUT_MARKER) and all(len(t.encode()) <= 200 and looks_like_fragment(t) for t in texts)


def test_shutdown_during_the_wait_keeps_the_question_stored(server_model, radio, tmp_path) -> None:
    import threading

    from meshbot.app.compose import build_daemon
    from meshbot.core.clock import SystemClock
    from meshbot.storage.store import Store

    server_model.failures.extend(down(100))
    cfg = load_config(overrides={"model.retry_for_s": 600, "model.retry_backoff_s": 60}, environ={})
    path = tmp_path / "meshbot.db"
    daemon = build_daemon(cfg, radio=radio, model=server_model, clock=SystemClock(), store=Store(path))
    daemon.start()
    radio.receive(dm("are you there?"))
    wait_until(lambda: server_model.calls == 1)
    stopper = threading.Thread(target=daemon.stop, kwargs={"grace_s": 30.0})
    stopper.start()
    stopper.join(5.0)  # the 60 s backoff is cut short: SIGTERM still stops within seconds
    assert not stopper.is_alive()
    assert radio.texts() == []  # no apology: the question is not given up, it waits for the next start
    with Store(path) as store:
        assert [q.question for q in store.unfinished()] == ["are you there?"]


def test_status_shows_the_backend_the_server_and_the_last_call(tmp_path) -> None:
    import io

    from meshbot.app.status import run_status
    from meshbot.storage.store import Store

    path = tmp_path / "meshbot.db"
    cfg = load_config(
        environ={"MESHBOT_MODEL_BACKEND": "openai", "MESHBOT_MODEL_BASE_URL": URL, "MESHBOT_STORE_PATH": str(path)}
    )
    Store(path).close()  # a daemon's store (status never creates one)
    out = io.StringIO()
    run_status(cfg, out)
    assert f"model: openai at {URL}, no call recorded yet" in out.getvalue()
    with Store(path) as store:
        store.record_event("model-ok")
        store.record_event("model-error")
    out = io.StringIO()
    run_status(cfg, out)
    assert f"model: openai at {URL}, last call FAILED" in out.getvalue()
    out = io.StringIO()
    run_status(cfg, out, as_json=True)
    assert json.loads(out.getvalue())["model"] | {"last_call_at": 0} == {
        "backend": "openai",
        "server": URL,
        "last_call_ok": False,
        "last_call_at": 0,
    }
