# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The files of a saved `ProductSearchIndex` (`modeling_eclip.evaluation.search`): its `search_index.json`, checked
as it is read, and the fingerprints that tie the index file, the catalogue and the model together.

A faiss index returns row numbers; they name the right products only beside the catalogue it was built on, in the
same row order, and only for queries embedded by the model that embedded the catalogue. Row count and vector size
cannot tell; these fingerprints can: the sha256 of the product ids in row order, of the embeddings, of the index file,
and the embeddings of a fixed probe image and title by the model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np

# Format 2 adds the fingerprints; format 1 (none) still loads, unchecked, with a warning.
INDEX_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
FINGERPRINTS = ("product_ids", "embeddings", "index_file")
# The probe's title. A model and processor must embed the probe as the saved ones did, within the tolerance (cosine
# distance): bf16 / fp16 copies of one model stay far below it (~1e-4 on the tiny test model), other weights far above.
PROBE_TITLE = "a red cotton shirt with short sleeves"
PROBE_TOLERANCE = 1e-2
_ID_BATCH = 10_000


def product_ids_sha256(catalogue: datasets.Dataset) -> str | None:
    """sha256 of the `product_id` column in row order (None without one): what ties a saved index to its rows."""
    if "product_id" not in catalogue.column_names:
        return None
    digest = hashlib.sha256()
    for batch in catalogue.select_columns(["product_id"]).iter(batch_size=_ID_BATCH):
        # One JSON value a line: unambiguous whatever the ids hold, and independent of the batch size.
        digest.update("".join(json.dumps(value, default=str) + "\n" for value in batch["product_id"]).encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reads_from(catalogue: datasets.Dataset, folder: Path) -> bool:
    """Whether the catalogue is memory-mapped from files under `folder`."""
    folder = folder.resolve()
    return any(Path(entry["filename"]).resolve().is_relative_to(folder) for entry in catalogue.cache_files)


def probe_image() -> np.ndarray:
    """A fixed 48x40 RGB gradient: no randomness, so every version draws the same pixels."""
    rows, columns = np.indices((48, 40))
    return np.stack([rows * 5, columns * 6, (rows + columns) * 2], axis=-1).astype(np.uint8)


def read_index_info(info_file: Path) -> dict[str, Any]:
    """`search_index.json`, checked: errors name the file and the key, and say to save the index again."""
    try:
        info = json.loads(info_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{info_file} is not valid JSON ({error}); save the index again.") from None
    if not isinstance(info, dict):
        raise ValueError(f"{info_file} holds a {type(info).__name__}, not a JSON object; save the index again.")
    version = info.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise ValueError(
            f"{info_file.parent} holds a search index of format {version!r}; this version reads "
            f"{' or '.join(map(str, READABLE_FORMAT_VERSIONS))}."
        )
    required = {"string_factory": str, "search_parameters": (str, type(None)), "hidden_columns": list}
    if version >= 2:
        required |= {"fingerprints": dict, "model_probe": (dict, type(None))}
    for key, kind in required.items():
        if key not in info:
            raise ValueError(f"{info_file} has no {key!r}; save the index again.")
        if not isinstance(info[key], kind):
            raise ValueError(f"{info_file} has a bad {key!r}: {info[key]!r}; save the index again.")
    for key in FINGERPRINTS if version >= 2 else ():
        if key not in info["fingerprints"]:
            raise ValueError(f"{info_file} has no fingerprints[{key!r}]; save the index again.")
    return info


__all__ = [
    "INDEX_FORMAT_VERSION",
    "PROBE_TITLE",
    "PROBE_TOLERANCE",
    "file_sha256",
    "probe_image",
    "product_ids_sha256",
    "read_index_info",
    "reads_from",
]
