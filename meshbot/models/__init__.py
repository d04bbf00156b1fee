"""Model backends: what writes the answers. Each module here implements `core.domain.Model`.

`BACKENDS` maps `[model] backend` to a factory `(cfg, clock) -> Model`. A new backend is one module in this
folder and one line here; `base.BaseModel` gives it the defaults the daemon relies on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshbot.core.registry import Registry

if TYPE_CHECKING:
    from meshbot.core.config import ModelConfig
    from meshbot.core.domain import Clock, Model

BACKENDS = Registry(
    "model.backend",
    {
        "llama_cpp": "meshbot.models.llama:load_model",
        "openai": "meshbot.models.openai_api:load_model",
    },
)


def make_model(cfg: ModelConfig, clock: Clock | None = None) -> Model:
    """The model backend `[model] backend` names, loaded and ready."""
    factory = BACKENDS.load(cfg.backend)
    model: Model = factory(cfg, clock)
    return model
