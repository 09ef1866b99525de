# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""`export_info.json`, what `export_embedding_graphs` writes beside its ONNX graphs, read and checked: an error names
the file and the missing or bad key, and says to export again, where a plain `json.loads` and `info[key]` would raise
a bare `JSONDecodeError` or `KeyError`.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..data.files import read_json_object

EXPORT_INFO_FILE = "export_info.json"
EXPORT_FORMAT = "eclip-onnx-embeddings"
# Recorded since the embedder checks token ids and lengths itself; exports before that lack them.
OPTIONAL_SIZES = ("num_channels", "vocab_size", "max_text_length")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_export_info(info_file: pathlib.Path, known_graphs: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The checked content of `info_file`; `known_graphs` maps each graph name this version exports to its inputs."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"{info_file} {problem}; export the model again (examples/export_onnx.py).")

    info = read_json_object(info_file, "export the model again (examples/export_onnx.py)")
    for key in ("format", "projection_dim", "image_size", "logit_scale", "graphs"):
        if key not in info:
            raise bad(f"has no {key!r}")
    if info["format"] != EXPORT_FORMAT:
        raise bad(f"is not an ECLIP ONNX export: its format is {info['format']!r}, not {EXPORT_FORMAT!r}")
    for key in ("projection_dim", "image_size", *(key for key in OPTIONAL_SIZES if key in info)):
        if not _positive_int(info[key]):
            raise bad(f"has a bad {key!r}: {info[key]!r}, not a positive integer")
    scale = info["logit_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise bad(f"has a bad 'logit_scale': {scale!r}, not a positive number")
    graphs = info["graphs"]
    if not isinstance(graphs, dict):
        raise bad(f"has a bad 'graphs': {graphs!r}, not an object")
    if not graphs:
        raise bad("lists no graphs")
    for name, entry in graphs.items():
        if name not in known_graphs:
            raise bad(f"lists an unknown graph {name!r} (this version knows {sorted(known_graphs)})")
        where = f"graphs[{name!r}]"
        if not isinstance(entry, dict):
            raise bad(f"has a bad {where}: {entry!r}, not an object")
        for key in ("file", "inputs", "output"):
            if key not in entry:
                raise ValueError(f"{info_file}: {where} has no {key!r}; export the model again.")
        for key in ("file", "int8_file"):
            # A bare file name: the graphs lie beside export_info.json, nowhere else.
            if key in entry and (not isinstance(entry[key], str) or pathlib.PurePath(entry[key]).name != entry[key]):
                raise bad(f"has a bad {where}[{key!r}]: {entry[key]!r}, not a file name in its folder")
        if entry["inputs"] != list(known_graphs[name]):
            raise bad(
                f"says the {name!r} graph takes {entry['inputs']!r}; this version's takes {list(known_graphs[name])}"
            )
    return info


__all__ = ["EXPORT_FORMAT", "EXPORT_INFO_FILE", "read_export_info"]
