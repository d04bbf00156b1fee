"""The mesh facts a question about the mesh gets in its prompt, from the node directory (a `ContextSource`).

`!src` after such an answer names the node directory: `last_source` remembers, per conversation, whether the
last answer was given mesh facts.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

from meshbot.core.config import MeshDirectoryConfig
from meshbot.core.domain import Context, NodeDirectory
from meshbot.core.mesh_facts import classify, fact_lines, mesh_block
from meshbot.service.queueing import Query

SOURCE_NAME = "node directory (what the mesh reported)"
_KEPT = 4096  # conversations whose last answer's source is remembered


class MeshContext:
    """Adds the mesh facts block to a question about the mesh; remembers which answers used it."""

    def __init__(self, directory: NodeDirectory, cfg: MeshDirectoryConfig) -> None:
        self._dir = directory
        self._cfg = cfg
        self._lock = threading.Lock()
        self._pending: dict[int, bool] = {}
        self._used: OrderedDict[tuple[int, int | None], bool] = OrderedDict()

    def block_for(self, question: str, asker: int, is_dm: bool) -> str | None:
        """The mesh block for one question, or None when it is not about the mesh (or nothing is known)."""
        asked = classify(question, self._dir.named(question))
        if not asked.about_mesh:
            return None
        records = self._dir.records()
        lines = fact_lines(asked, records, asker, self._dir.now(), locations=self._cfg.location_commands, is_dm=is_dm)
        return mesh_block(lines, self._cfg.token_budget)

    def gather(self, query: Query, context: Context) -> Context:
        """Add the block (ContextSource)."""
        block = self.block_for(query.decision.question, query.node, query.inbound.is_dm)
        with self._lock:
            self._pending[query.query_id] = block is not None
            while len(self._pending) > _KEPT:
                self._pending.pop(next(iter(self._pending)))
        return dataclasses.replace(context, mesh=block) if block else context

    def answered(self, query: Query, question: str, answer: str) -> None:
        """Remember whether this answer drew on the directory, for the asker's next `!src`."""
        with self._lock:
            used = self._pending.pop(query.query_id, False)
            self._used[query.conversation] = used
            self._used.move_to_end(query.conversation)
            while len(self._used) > _KEPT:
                self._used.popitem(last=False)

    def last_source(self, node: int, channel: int | None) -> str | None:
        """ "node directory" when the last answer to (node, channel) was given mesh facts, else None."""
        with self._lock:
            return SOURCE_NAME if self._used.get((node, channel)) else None
