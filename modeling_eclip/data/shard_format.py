# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The one definition of the ECLIP product-catalogue shard format.

Every producer (the demo catalogue builder, catalogue converters) and every consumer (the training stream,
evaluation) goes through this module, so the format lives in exactly one place.

Layout of a catalogue directory::

    <root>/train/shard-00000.parquet, shard-00001.parquet, ...
    <root>/test/shard-00000.parquet, ...
    <root>/dataset_info.json (+ licence / attribution files)

One parquet row per product:

* ``product_id`` (string): stable identifier, e.g. ``"emoji-1f3b8"``.
* ``title`` (string): the product title shown in the shop.
* ``category`` (string): readable category, e.g. ``"musical instrument"``.
* ``split`` (string): ``"train"`` or ``"test"`` (the directory the shard lives in).
* ``images`` (list of struct): every image of the product, each with

  * ``image`` (binary): encoded PNG or JPEG bytes,
  * ``source`` (string): who "photographed" it (an artwork set, a shop, a camera...),
  * ``kind`` (string): one of :data:`IMAGE_KINDS`,
  * ``boxes`` (list of [x0, y0, x1, y1] float32): pixel boxes in the stored image of every object in it,
    the product itself first; ``x1``/``y1`` are exclusive pixel edges, so a box covers the pixel columns
    ``x0 .. x1 - 1`` and ``0 <= x0 < x1 <= width``,
  * ``box_product_ids`` (list of string): the product id of each box, ``box_product_ids[0] == product_id``.

Shards are written under a temporary name and renamed, so a reader never sees a half-written shard.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_FORMAT_VERSION = "1"
SHARD_GLOB = "shard-*.parquet"
IMAGE_KINDS = ("catalog", "customer", "ad")
SPLITS = ("train", "test")
# Whole shards are read into memory by the stream; 64 MB keeps that cheap and the file count low.
DEFAULT_MAX_SHARD_BYTES = 64 * 1024 * 1024
# Small row groups let a streaming reader start quickly and shuffle at row-group granularity.
DEFAULT_ROW_GROUP_SIZE = 64

IMAGE_STRUCT = pa.struct(
    [
        pa.field("image", pa.binary(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("boxes", pa.list_(pa.list_(pa.float32())), nullable=False),
        pa.field("box_product_ids", pa.list_(pa.string()), nullable=False),
    ]
)

SHARD_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("images", pa.list_(IMAGE_STRUCT), nullable=False),
    ],
    metadata={b"eclip_shard_format_version": SHARD_FORMAT_VERSION.encode()},
)

# Statistics only on the small string columns: min/max of image bytes are useless and bloat the footer.
_STATISTICS_COLUMNS = ["product_id", "title", "category", "split"]


def shard_name(index: int) -> str:
    """File name of the ``index``-th shard of a split, e.g. ``shard-00000.parquet``."""
    return f"shard-{index:05d}.parquet"


def list_shards(root: str | os.PathLike, split: str) -> list[Path]:
    """Sorted shard paths of one split of the catalogue at ``root``."""
    return sorted((Path(root) / split).glob(SHARD_GLOB))


def require_shards(root: str | os.PathLike, split: str) -> list[Path]:
    """:func:`list_shards`, for readers that need the split: an empty or missing split raises ``FileNotFoundError``."""
    paths = list_shards(root, split)
    if not paths:
        raise FileNotFoundError(f"No shards ({SHARD_GLOB}) in {Path(root) / split}; is this a catalogue?")
    return paths


def image_format(data: bytes) -> str:
    """``"png"`` or ``"jpeg"`` from the magic bytes; raises ``ValueError`` for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    raise ValueError("image bytes are neither PNG nor JPEG")


def validate_row(row: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if ``row`` does not follow the shard format (cheap checks, no image decoding)."""
    for key in ("product_id", "title", "category", "split"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise ValueError(f"row field {key!r} must be a non-empty string, got {row.get(key)!r}")
    images = row.get("images")
    if not isinstance(images, Sequence) or not images:
        raise ValueError(f"product {row['product_id']}: 'images' must be a non-empty list")
    for i, image in enumerate(images):
        where = f"product {row['product_id']} image {i}"
        image_format(image["image"])
        if image["kind"] not in IMAGE_KINDS:
            raise ValueError(f"{where}: kind {image['kind']!r} not in {IMAGE_KINDS}")
        if not image["source"]:
            raise ValueError(f"{where}: empty source")
        boxes, ids = image["boxes"], image["box_product_ids"]
        if len(boxes) != len(ids) or not boxes:
            raise ValueError(f"{where}: needs one product id per box and at least the product's own box")
        if ids[0] != row["product_id"]:
            raise ValueError(f"{where}: the first box must be the product itself")
        for box in boxes:
            if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError(f"{where}: box {box!r} is not [x0, y0, x1, y1] with x0 < x1, y0 < y1")


def _row_nbytes(row: Mapping[str, Any]) -> int:
    """Approximate stored size of a row (images dominate)."""
    return sum(len(image["image"]) + 64 * len(image["boxes"]) for image in row["images"]) + 256


def write_table_atomic(table: pa.Table, path: str | os.PathLike, row_group_size: int = DEFAULT_ROW_GROUP_SIZE) -> None:
    """Write ``table`` as parquet to ``path`` via a temporary file + rename, so no half-written shard exists.

    Encoder settings are fixed so the same rows always give the same bytes (no timestamps in parquet).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(
            table.cast(SHARD_SCHEMA),
            tmp,
            row_group_size=row_group_size,
            compression="zstd",
            compression_level=3,
            write_statistics=_STATISTICS_COLUMNS,
            use_dictionary=["category", "split"],
        )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class ShardWriter:
    """Write rows of one split to ``shard-NNNNN.parquet`` files of at most about ``max_bytes`` each.

    ``directory`` must hold no shard yet (``FileExistsError`` otherwise): shards of an earlier write would be read
    with the new ones. Use as a context manager; rows are buffered and flushed as a whole shard, atomically::

        with ShardWriter(root / "train") as writer:
            for row in rows:
                writer.write(row)
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        max_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        validate: bool = True,
    ) -> None:
        self.directory = Path(directory)
        if any(self.directory.glob(SHARD_GLOB)):
            raise FileExistsError(f"{self.directory} already holds shards; write into an empty folder")
        self.max_bytes = max_bytes
        self.row_group_size = row_group_size
        self.validate = validate
        self.paths: list[Path] = []
        self.num_rows = 0
        self._rows: list[Mapping[str, Any]] = []
        self._nbytes = 0

    def write(self, row: Mapping[str, Any]) -> None:
        """Buffer one product row; starts a new shard when this one would exceed ``max_bytes``."""
        if self.validate:
            validate_row(row)
        size = _row_nbytes(row)
        if self._rows and self._nbytes + size > self.max_bytes:
            self.flush()
        self._rows.append(row)
        self._nbytes += size

    def flush(self) -> None:
        """Write the buffered rows as the next shard (no-op when nothing is buffered)."""
        if not self._rows:
            return
        path = self.directory / shard_name(len(self.paths))
        write_table_atomic(pa.Table.from_pylist(self._rows, schema=SHARD_SCHEMA), path, self.row_group_size)
        self.paths.append(path)
        self.num_rows += len(self._rows)
        self._rows, self._nbytes = [], 0

    def close(self) -> None:
        """Flush the last shard."""
        self.flush()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # On an exception keep only the complete shards already written; drop the buffered rest.
        if exc_type is None:
            self.close()


def write_shards(
    rows: Iterable[Mapping[str, Any]], directory: str | os.PathLike, max_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> list[Path]:
    """Write ``rows`` to shards in ``directory`` and return their paths."""
    with ShardWriter(directory, max_bytes=max_bytes) as writer:
        for row in rows:
            writer.write(row)
    return writer.paths


def iter_rows(paths: Iterable[str | os.PathLike]) -> Iterator[dict[str, Any]]:
    """Yield product rows (plain dicts) from shard files, one row group at a time."""
    for path in paths:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group).to_pylist()


def read_split(root: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """All product rows of one split of the catalogue at ``root``."""
    return list(iter_rows(list_shards(root, split)))
