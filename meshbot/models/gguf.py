"""A GGUF file's header, read without loading the model: is this file a model llama.cpp can open at all?

The header is the magic "GGUF", a little-endian uint32 version, then uint64 tensor and metadata counts.
Reading those 24 bytes catches the usual mistakes (a wrong path, a half-downloaded file, an HTML error
page saved as .gguf) in a millisecond, where loading would take seconds and much memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"GGUF"
HEADER = struct.Struct("<4sIQQ")
KNOWN_VERSIONS = frozenset({2, 3})  # version 1 files predate llama.cpp's current loader


class NotGGUF(ValueError):
    """The file is not a GGUF model llama.cpp would load; the message says what was found."""


@dataclass(frozen=True)
class GGUFHeader:
    """The fixed part of a GGUF header."""

    version: int
    tensors: int
    metadata_keys: int


def read_header(path: Path) -> GGUFHeader:
    """The header of `path`; NotGGUF when it is not a GGUF model, OSError when it cannot be read."""
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    if len(head) < HEADER.size:
        raise NotGGUF(f"only {len(head)} bytes: too short for a GGUF model (a partial download?)")
    magic, version, tensors, keys = HEADER.unpack(head)
    if magic != MAGIC:
        raise NotGGUF(f"not a GGUF model file (it starts with {head[:4]!r}, not {MAGIC!r})")
    if version not in KNOWN_VERSIONS:
        raise NotGGUF(f"GGUF version {version}: this llama.cpp reads versions {sorted(KNOWN_VERSIONS)}")
    if tensors == 0:
        raise NotGGUF("a GGUF file with no tensors (a vocabulary-only file, not a model)")
    return GGUFHeader(version, tensors, keys)
