"""The answer pipeline shared by the daemon's worker, `meshbot ask` and `meshbot eval`.

A question becomes a `Generation` (core.prompting), the backend streams text, the text is tidied (no
markdown on air) and cut into numbered fragments as it arrives. Whatever surrounds it (the radio, the
console, a scoring table) only consumes `Fragment`s, so all three see exactly what would go on air.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from meshbot.core.domain import Generation, GenerationStats, Model
from meshbot.core.fragmenter import Fragment, StreamFragmenter
from meshbot.core.text import tidy_stream


class Abandoned(Exception):
    """The caller asked the answer to stop mid-generation (shutdown)."""


class AnswerStream:
    """One answer: iterate for its fragments as they fill; then read `stats`, `remainder` and `capped`."""

    def __init__(
        self,
        model: Model,
        request: Generation,
        fragment_bytes: int,
        max_fragments: int,
        should_stop: Callable[[], bool] = lambda: False,
        tag: str = "",
    ) -> None:
        self.model = model
        self.request = request
        self.stats = GenerationStats()
        self.fragments: list[Fragment] = []
        self._pieces: list[str] = []  # the tidied answer text, for memory and grounding
        self._fragmenter = StreamFragmenter(fragment_bytes, max_fragments, tag=tag)
        self._should_stop = should_stop
        self.tokens = 0  # pieces the model streamed so far (one per token from llama.cpp)

    def __iter__(self) -> Iterator[Fragment]:
        """Fragments in order, each as soon as text past its end proves it full; raises Abandoned."""
        # Tidy before fragmenting, so byte counts are of what is sent.
        for piece in tidy_stream(self._counted(self.model.stream(self.request, self.stats))):
            if self._should_stop():
                raise Abandoned
            self._pieces.append(piece)
            yield from self._keep(self._fragmenter.feed(piece))
        yield from self._keep(self._fragmenter.finish())

    def _counted(self, pieces: Iterator[str]) -> Iterator[str]:
        for piece in pieces:
            self.tokens += 1
            yield piece

    def cut_off(self, marker: str) -> list[Fragment]:
        """End an answer whose stream stopped: what is held back, then `marker`, as the last fragment(s)."""
        # The marker is not part of the answer text (history, memory): only of what goes on air.
        return list(self._keep(self._fragmenter.feed(marker) + self._fragmenter.finish()))

    def _keep(self, fragments: list[Fragment]) -> Iterator[Fragment]:
        for frag in fragments:
            self.fragments.append(frag)
            yield frag

    @property
    def text(self) -> str:
        """The whole answer as the model wrote it (tidied), including what was kept for "more"."""
        return "".join(self._pieces).strip()

    @property
    def capped(self) -> bool:
        """True when the answer hit the fragment cap and text is kept for "more"."""
        return self._fragmenter.capped

    @property
    def remainder(self) -> str:
        """Text past the cap, for "more"."""
        return self._fragmenter.remainder

    @property
    def next_index(self) -> int:
        """The number the next fragment of this answer would carry."""
        return self._fragmenter.next_index

    @property
    def nbytes(self) -> int:
        """Bytes of every fragment so far."""
        return sum(f.nbytes for f in self.fragments)
