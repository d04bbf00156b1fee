"""`meshbot serve-model`: llama-cpp-python's own OpenAI-compatible server, with the load settings of this backend.

The server is `python -m llama_cpp.server`, unchanged: every flag is its own (`meshbot serve-model --help`). What
this adds is what `LlamaModel` does at load time. On a llama.cpp build with ggml's AMX kernels, an AMX Xeon dies at
the server's first request (SIGSEGV, no log line), so the model loads with the extra weight buffers off, as the
in-process engine does. Several workers share one such server through the `openai` backend.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from meshbot.models.base import ModelError, pip_install
from meshbot.models.llama import import_llama, load_overrides, model_params

log = logging.getLogger(__name__)

SERVER_INSTALL = pip_install("'llama-cpp-python[server]==0.3.36'")  # what meshbot's `server` extra installs


def serve(argv: Sequence[str]) -> int:
    """Run llama-cpp-python's server with `argv` (its own flags) until it stops; its exit status."""
    llama_cpp, _ = import_llama()
    try:
        server = importlib.import_module("llama_cpp.server.__main__")
    except ImportError as exc:
        raise ModelError(f"llama-cpp-python's server is not installed ({exc}); run `{SERVER_INSTALL}`") from exc
    # The server parses sys.argv itself and loads its model inside main(): the params hold for its whole life.
    sys.argv = ["meshbot serve-model", *argv]
    with model_params(llama_cpp, **load_overrides(llama_cpp)):
        try:
            server.main()
        except SystemExit as exc:  # argparse's --help and usage errors, and uvicorn's own exits
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
