# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""File helpers the tools share: the checksum of a file and a JSON object read with an error that names the file.

Checkpoints (``training/checkpoints.py``), the search index (``evaluation/search_index.py``) and the ONNX export
(``serving/export_info.py``) each keep a manifest of what they wrote; these are the two things all of them do to it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read a MiB at a time (exports and indexes are far larger than memory allows)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_object(path: Path, remedy: str) -> dict[str, Any]:
    """The JSON object in ``path``; a ``ValueError`` naming the file, what is wrong and ``remedy`` (what to do) when it
    is not valid JSON or not an object."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {remedy}.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}, not a JSON object; {remedy}.")
    return value
