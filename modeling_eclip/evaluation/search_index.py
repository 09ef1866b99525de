# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The checks of a `ProductSearchIndex` (`modeling_eclip.evaluation.search`) that are not about embedding: its saved
`search_index.json`, read and checked; the fingerprints that tie the index file, the catalogue and the model together;
query embeddings; and a faiss index's ids, which must be the catalogue's row numbers.

A faiss index returns row numbers; they name the right products only beside the catalogue it was built on, in the
same row order, and only for queries embedded by the model that embedded the catalogue. Row count and vector size
cannot tell; these fingerprints can: the sha256 of the product ids in row order, of the embeddings, of the index file,
and the embeddings of a fixed probe image and title by the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import faiss
import numpy as np

from ..data.files import read_json_object

logger = logging.getLogger(__name__)

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


def reads_from(catalogue: datasets.Dataset, folder: Path) -> bool:
    """Whether the catalogue is memory-mapped from files under `folder`."""
    folder = folder.resolve()
    return any(Path(entry["filename"]).resolve().is_relative_to(folder) for entry in catalogue.cache_files)


def probe_image() -> np.ndarray:
    """A fixed 48x40 RGB gradient: no randomness, so every version draws the same pixels."""
    rows, columns = np.indices((48, 40))
    return np.stack([rows * 5, columns * 6, (rows + columns) * 2], axis=-1).astype(np.uint8)


def checked_queries(queries: Any, dim: int, name: str) -> np.ndarray:
    """`(num_queries >= 1, dim)` finite float32 query embeddings, contiguous (what faiss takes), or a ValueError."""
    try:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a (num_queries, D) float array: {error}") from None
    if queries.ndim != 2 or queries.shape[0] == 0 or queries.shape[1] != dim:
        raise ValueError(f"{name} must be (num_queries >= 1, {dim}) like the catalogue's, got shape {queries.shape}.")
    if not np.isfinite(queries).all():
        rows = np.flatnonzero(~np.isfinite(queries).all(axis=1)).tolist()
        raise ValueError(f"{name} has NaN or infinite values in rows {rows[:10]}.")
    return queries


def id_map(index: Any) -> Any:
    """The IndexIDMap(2) of a factory index such as "IDMap,Flat" or "PCA32,IDMap,Flat", or None."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)) else None


def check_ready_index(index: Any, count: int, dim: int) -> None:
    """A ready faiss index must hold the catalogue's vectors under their row numbers, which search turns into rows."""
    if not isinstance(index, faiss.Index):
        raise ValueError(f"faiss_index must be a faiss index, got {type(index).__name__}.")
    if index.ntotal != count or index.d != dim:
        raise ValueError(
            f"The faiss index holds {index.ntotal} vectors of size {index.d}, the catalogue {count} of size {dim}; "
            "they do not belong together."
        )
    mapped = id_map(index)
    if mapped is not None and not np.array_equal(faiss.vector_to_array(mapped.id_map), np.arange(count)):
        raise ValueError(
            "The faiss index maps its vectors to ids that are not the catalogue's row numbers (0, 1, ...), so its "
            "hits would name the wrong rows; add the vectors with add_with_ids(embeddings, np.arange(len(catalogue)))."
        )


def check_model_probe(info: dict[str, Any], embed_probe: Callable[[], dict[str, list[float]]], info_file: Path) -> None:
    """Refuses a model whose embeddings of the probe (`embed_probe()`) are not those saved in `info`: its queries
    would not compare with the catalogue's embeddings."""
    saved = info.get("model_probe")
    if saved is None:
        logger.warning(
            "%s was saved without a model: nothing checks that the model given embeds as the one that embedded its "
            "catalogue.",
            info_file.parent,
        )
        return
    probe = embed_probe()
    try:
        distance = max(1.0 - float(np.dot(saved[kind], probe[kind])) for kind in probe)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{info_file} has a broken 'model_probe' ({error}); save the index again.") from None
    if not distance <= PROBE_TOLERANCE:
        raise ValueError(
            f"The model and processor given to load {info_file.parent} do not embed as the model that built it (cosine "
            f"distance {distance:.3f} on a fixed probe, more than {PROBE_TOLERANCE}): your queries would not compare "
            "with its catalogue. Load it with the model it was built with, or rebuild the index with this one."
        )


def read_index_info(info_file: Path) -> dict[str, Any]:
    """`search_index.json`, checked: errors name the file and the key, and say to save the index again."""
    info = read_json_object(info_file, "save the index again")
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
    "check_model_probe",
    "check_ready_index",
    "checked_queries",
    "id_map",
    "probe_image",
    "product_ids_sha256",
    "read_index_info",
    "reads_from",
]
