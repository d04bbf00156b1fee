"""The `openai` backend: answers from a model server on another machine, over the OpenAI chat API.

llama-server, llama-cpp-python's `llama_cpp.server`, Ollama and vLLM all serve `POST {base_url}/chat/completions`
with `"stream": true` as server-sent events. This module maps a `Generation` to that request and the events back
to text pieces. It never retries and never sleeps: it raises `ModelUnavailable` (nothing came: down, refused,
timed out, an HTTP error) or `ModelStalled` (the stream stopped mid-answer), each with a message that says what
the operator must fix, and the service decides what the asker hears (service/outage.py).
"""

# Client choice: httpx (already a dependency; streaming with a timeout on every socket read, which is exactly
# "the longest silence between chunks") plus httpx-sse, a small maintained parser of the SSE wire format on top
# of it. The `openai` client library would also work, but it brings its own retries and backoff (which would
# fight the service's bounded retry policy), a typed object per chunk, and several more packages and megabytes
# to a daemon that should stay a small service on a Pi, only to read the same three fields.

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from meshbot.core.clock import SystemClock
from meshbot.core.config import ModelConfig
from meshbot.core.domain import Clock, Generation, GenerationStats
from meshbot.core.events import Event
from meshbot.models.base import BaseModel, ModelError, ModelStalled, ModelUnavailable

log = logging.getLogger(__name__)

_DETAIL_CHARS = 160  # of a server's error body, quoted in the log line


def api_key(cfg: ModelConfig) -> str | None:
    """The key from `api_key`, else from the variable `api_key_env` names; ModelError if that variable is unset."""
    if cfg.api_key is not None:
        return cfg.api_key.get_secret_value()
    if cfg.api_key_env:
        value = os.environ.get(cfg.api_key_env)
        if not value:
            raise ModelError(f"model.api_key_env names {cfg.api_key_env}, but that variable is not set")
        return value
    return None


def _client(cfg: ModelConfig, transport: httpx.BaseTransport | None) -> httpx.Client:
    key = api_key(cfg)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # read: a socket read, so between two chunks of the stream (and before the first one).
    timeout = httpx.Timeout(
        connect=cfg.connect_timeout_s, read=cfg.chunk_timeout_s, write=cfg.chunk_timeout_s, pool=cfg.connect_timeout_s
    )
    return httpx.Client(base_url=f"{cfg.base_url}/", headers=headers, timeout=timeout, transport=transport)


class OpenAIModel(BaseModel):
    """A model behind an OpenAI-compatible chat completions endpoint, streamed."""

    deterministic = False  # a server may batch requests, ignore the seed or change its weights

    def __init__(self, cfg: ModelConfig, clock: Clock | None = None, transport: httpx.BaseTransport | None = None):
        if not cfg.base_url:
            raise ModelError('model.base_url is required with backend = "openai"')
        self._cfg = cfg
        self._clock = clock or SystemClock()
        self.base_url = cfg.base_url
        self.where = f"the model server at {cfg.base_url}"
        self._client = _client(cfg, transport)
        self.api_model = cfg.api_model
        self.name = self._name()

    def _name(self) -> str:
        return f"{self.api_model or '(first listed)'} at {self.base_url}"

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    # -- which model -------------------------------------------------------------------------------
    def model_id(self) -> str:
        """`api_model`, or the first model the server lists at /models (asked once, then kept)."""
        if self.api_model:
            return self.api_model
        try:
            response = self._client.get("models")
            _raise_for_status(response, self.where, "(listing models)")
            listed = [str(m["id"]) for m in response.json().get("data", []) if "id" in m]
        except httpx.TransportError as exc:
            raise _transport_failure(exc, 0, self._cfg, self.where) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelUnavailable(
                f"{self.where} answered /models with no model list ({exc}): set model.api_model", retryable=False
            ) from exc
        if not listed:
            raise ModelUnavailable(f"{self.where} lists no model: load one there, or set model.api_model")
        self.api_model, self.name = listed[0], f"{listed[0]} at {self.base_url}"
        log.info(
            "model server %s: using model %s, the first of %d it lists (model.api_model chooses another)",
            self.base_url,
            listed[0],
            len(listed),
            extra={"event": Event.MODEL_CHOSEN},
        )
        return listed[0]

    # -- answering ---------------------------------------------------------------------------------
    def request_body(self, model: str, request: Generation) -> dict[str, Any]:
        """The chat completion request for `request`: the same turns and token cap as the local backend."""
        cfg = self._cfg
        # Only parameters of the OpenAI API itself: top_k and repeat_penalty are extensions that some
        # servers reject (HTTP 400), so they stay with the local backend.
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": t.role, "content": t.content} for t in request.turns],
            "max_tokens": min(request.max_tokens, cfg.max_tokens_cap),
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "stream": True,
        }
        seed = request.seed if request.seed is not None and request.seed >= 0 else cfg.seed
        if seed >= 0:
            body["seed"] = seed
        return body

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        """Yield the answer's text as the server streams it; raise ModelUnavailable or ModelStalled."""
        body = self.request_body(self.model_id(), request)
        started = self._clock.now()
        progress = _Progress()
        try:
            with connect_sse(self._client, "POST", "chat/completions", json=body) as source:
                _raise_for_status(source.response, self.where, body["model"])
                yield from self._pieces(source.iter_sse(), stats, started, progress)
        except httpx.TransportError as exc:  # connect, timeouts, a connection dropped mid-body
            raise _transport_failure(exc, progress.pieces, self._cfg, self.where) from exc
        except SSEError as exc:  # not an event stream at all
            raise ModelUnavailable(
                f"{self.where} did not answer with an event stream ({exc}): check model.base_url ends in /v1",
                retryable=False,
            ) from exc

    def _pieces(
        self, events: Iterator[Any], stats: GenerationStats, started: float, progress: _Progress
    ) -> Iterator[str]:
        finish: str | None = None
        for sse in events:
            if sse.data.strip() == "[DONE]":
                # A complete answer says why it ended (stop, length) before [DONE]. llama_cpp.server sends a bare
                # [DONE] when another request interrupts the stream (its default): that answer is cut short.
                if finish is None:
                    raise _cut(self.where, progress.pieces, _INTERRUPTED)
                break
            chunk = _chunk(sse.data, self.where, progress.pieces)
            if isinstance(chunk.get("usage"), dict):
                progress.usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    progress.pieces += 1
                    if stats.first_token_s is None:
                        stats.first_token_s = self._clock.now() - started
                    yield text
                finish = choice.get("finish_reason") or finish
        if finish is None:  # the body ended without saying the answer is complete
            raise _cut(self.where, progress.pieces, "the stream ended before the answer was complete")
        _finish_stats(stats, progress, finish, self._clock.now() - started)


class _Progress:
    """What one stream has delivered so far."""

    def __init__(self) -> None:
        self.pieces = 0
        self.usage: dict[str, Any] = {}


def _chunk(data: str, where: str, pieces: int) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise _cut(where, pieces, f"it sent an event that is not JSON: {data[:_DETAIL_CHARS]!r}") from None
    if not isinstance(chunk, dict):
        raise _cut(where, pieces, f"it sent an event that is not a JSON object: {data[:_DETAIL_CHARS]!r}")
    if "error" in chunk:  # vLLM and Ollama report a failure mid-stream this way
        raise _cut(where, pieces, f"it reported an error: {_error_text(chunk)}")
    return chunk


_INTERRUPTED = (
    "it ended the stream without a finish reason, as llama_cpp.server does when another request interrupts "
    "one (serve several workers with --interrupt_requests false)"
)


def _cut(where: str, pieces: int, why: str) -> ModelError:
    if pieces:
        return ModelStalled(f"{where} stopped mid-answer after {pieces} piece(s): {why}")
    return ModelUnavailable(f"{where} gave no answer: {why}")


def _finish_stats(stats: GenerationStats, progress: _Progress, finish: str, total_s: float) -> None:
    usage = progress.usage
    # Without a usage block, one content chunk is one token: how llama.cpp, Ollama and vLLM stream.
    stats.completion_tokens = int(usage.get("completion_tokens") or progress.pieces)
    stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    stats.total_s = total_s
    decode_s = total_s - (stats.first_token_s or 0.0)
    if stats.completion_tokens > 1 and decode_s > 0:
        stats.extra["tokens_per_s"] = (stats.completion_tokens - 1) / decode_s
    stats.extra["finish_length"] = 1.0 if finish == "length" else 0.0


def _error_text(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    if error is None and isinstance(body, dict):
        error = body.get("detail") or body.get("message")
    return str(error if error is not None else body)[:_DETAIL_CHARS]


def _detail(response: httpx.Response) -> str:
    response.read()
    try:
        return _error_text(response.json())
    except ValueError:
        return response.text.strip()[:_DETAIL_CHARS] or response.reason_phrase


def _raise_for_status(response: httpx.Response, where: str, model: str) -> None:
    """ModelUnavailable for an HTTP error, its message saying what the operator must fix."""
    code = response.status_code
    if code < 400:
        return
    got = f"HTTP {code}: {_detail(response)}"
    if code in (401, 403):
        fix, retry = "set model.api_key (or the variable model.api_key_env names) to a key it accepts", False
    elif code == 404:
        fix = f"set model.api_model to a model it lists at /v1/models (not {model!r}); model.base_url must end in /v1"
        retry = False
    elif code == 429:
        fix, retry = "raise the server's rate limit, or lower limits.global_per_hour", True
    elif code >= 500:
        fix, retry = "read the server's own log (still loading the model? out of memory?)", True
    else:
        fix = "check model.api_model; a long history or prompt may exceed the server's context size"
        retry = False
    raise ModelUnavailable(f"{where} refused the request ({got}): {fix}", retryable=retry, status=code)


def _transport_failure(exc: httpx.TransportError, pieces: int, cfg: ModelConfig, where: str) -> ModelError:
    if pieces:
        return ModelStalled(f"{where} stopped mid-answer after {pieces} piece(s): {_what(exc, cfg)}")
    if isinstance(exc, httpx.ConnectTimeout):
        why = f"no connection within {cfg.connect_timeout_s:g}s (model.connect_timeout_s): is the host up?"
    elif isinstance(exc, httpx.ConnectError):
        why = f"cannot connect ({exc}): is the server running, and is model.base_url right?"
    else:
        why = _what(exc, cfg)
    return ModelUnavailable(f"{where}: {why}")


def _what(exc: httpx.TransportError, cfg: ModelConfig) -> str:
    if isinstance(exc, httpx.ReadTimeout):
        return f"silent for {cfg.chunk_timeout_s:g}s (model.chunk_timeout_s): overloaded or hung?"
    return f"the connection broke ({type(exc).__name__}: {exc or 'no detail'})"


def load_model(cfg: ModelConfig, clock: Clock | None = None) -> OpenAIModel:
    """The `openai` backend factory; a server that is away now is no error (questions wait and retry)."""
    model = OpenAIModel(cfg, clock)
    try:
        model.model_id()
    except ModelUnavailable as exc:
        log.warning(
            "%s; meshbot starts anyway and tries again at each question", exc, extra={"event": Event.MODEL_ERROR}
        )
    return model
