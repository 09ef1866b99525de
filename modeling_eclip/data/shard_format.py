# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The one definition of the ECLIP product-catalogue format: a Hugging Face dataset repository as is.

Every producer (the demo catalogue builder, the catalogue converter, the migration of old shards) writes through this
module; readers go through :mod:`modeling_eclip.data.source`, which also reads catalogues laid out differently.

Layout of a catalogue folder (or Hub dataset repository)::

    <root>/README.md                               dataset card: YAML `configs` (split -> files), `dataset_info`
                                                   (features, split sizes), `license`; a description below it
    <root>/data/train-00000-of-00002.parquet, ...  one file set per split, `<split>-NNNNN-of-MMMMM.parquet`
    <root>/data/test-00000-of-00001.parquet
    <root>/LICENSE-DATA.md, ATTRIBUTION.md, ...    optional: licence texts of the images

``datasets.load_dataset(root)`` (with or without ``streaming=True``) reads it with nothing of ours imported: the
features below are stored in every parquet file's ``huggingface`` metadata and in the card, so images come back as
PIL images and image kinds as class labels. One row per product (:data:`CATALOGUE_FEATURES`):

* ``product_id`` (string): stable identifier, e.g. ``"emoji-1f3b8"``.
* ``title`` (string): the product title shown in the shop.
* ``category`` (string): readable category, e.g. ``"musical instrument"``.
* ``images`` (list): every image of the product, each with

  * ``image`` (``datasets.Image()``): encoded PNG or JPEG bytes stored inside the parquet file,
  * ``source`` (string): who "photographed" it (an artwork set, a shop, a camera...),
  * ``kind`` (``ClassLabel`` of :data:`IMAGE_KINDS`),
  * ``boxes`` (list of [x0, y0, x1, y1] float32): pixel boxes in the stored image of every object in it,
    the product itself first; ``x1``/``y1`` are exclusive pixel edges, so a box covers the pixel columns
    ``x0 .. x1 - 1`` and ``0 <= x0 < x1 <= width``,
  * ``box_product_ids`` (list of string): the product id of each box, ``box_product_ids[0] == product_id``.

One product per row rather than one image per row (which the readers also take): a product's images arrive together,
so readers need no grouping and no ordering of the rows, a split's product count is in the parquet footers, and
reading is up to 1.8x faster; the pairs/s of the training stream are the same for both, since decoding dominates
(``examples/benchmark_data.py`` measures both and says why).

Files are written under temporary names and renamed, and builders write into a staging folder swapped in whole
(``output_folder.py``), so a reader never sees a half-written catalogue.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

# 1: <split>/shard-*.parquet with raw binary images (modeling_eclip/data/migrate.py converts it); 2: this layout.
FORMAT_VERSION = "2"
DATA_FOLDER = "data"
CARD_NAME = "README.md"
IMAGE_KINDS = ("catalog", "customer", "ad")
SPLITS = ("train", "test")
# Readers hold whole row groups in memory; 64 MB files keep the file count low and uploads resumable per file.
DEFAULT_MAX_SHARD_BYTES = 64 * 1024 * 1024
# Small row groups let a streaming reader start quickly and shuffle at row-group granularity.
DEFAULT_ROW_GROUP_SIZE = 64

CATALOGUE_FEATURES = datasets.Features(
    {
        "product_id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "category": datasets.Value("string"),
        "images": datasets.List(
            {
                "image": datasets.Image(),
                "source": datasets.Value("string"),
                "kind": datasets.ClassLabel(names=list(IMAGE_KINDS)),
                "boxes": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                "box_product_ids": datasets.List(datasets.Value("string")),
            }
        ),
    }
)
# The arrow schema, with the features in its `huggingface` metadata (what `datasets` reads the types from).
CATALOGUE_SCHEMA = CATALOGUE_FEATURES.arrow_schema

# Modes a PNG file holds as they are.
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")
# Statistics only on the small string columns: min/max of image bytes are useless and bloat the footer.
_STATISTICS_COLUMNS = ["product_id", "title", "category"]


def shard_name(split: str, index: int, count: int) -> str:
    """File name of the ``index``-th of ``count`` files of a split, as the Hub names them:
    ``train-00000-of-00002.parquet``."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def list_shards(root: str | os.PathLike, split: str) -> list[Path]:
    """Sorted parquet files of one split of the local catalogue at ``root`` (``[]`` when it has none)."""
    return sorted((Path(root) / DATA_FOLDER).glob(f"{split}-*.parquet"))


def old_layout_splits(root: str | os.PathLike) -> list[str]:
    """Splits of ``root`` in the format-1 layout (``<split>/shard-*.parquet``), which readers no longer take."""
    root = Path(root)
    return sorted(path.name for path in root.iterdir() if path.is_dir() and any(path.glob("shard-*.parquet")))


def migration_hint(root: str | os.PathLike) -> str:
    """How to convert a format-1 catalogue at ``root``."""
    return (
        f"{root} holds catalogue shards of the old format 1 (<split>/shard-*.parquet); convert them with "
        f"`python -m modeling_eclip.data.migrate {root} --output NEW_FOLDER`"
    )


def image_format(data: bytes) -> str:
    """``"png"`` or ``"jpeg"`` from the magic bytes; raises ``ValueError`` for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    raise ValueError("image bytes are neither PNG nor JPEG")


def as_png_or_jpeg(data: bytes) -> tuple[bytes, str | None]:
    """``data`` as the format stores images: PNG or JPEG bytes as they are, ``(data, None)``; an image of another
    format that Pillow decodes (GIF, WebP, BMP, TIFF...) re-encoded losslessly as PNG, ``(png, "GIF")``: its first
    frame (what every reader decodes of it), same size and pixels (so its boxes still fit), transparency and EXIF
    orientation kept. Raises ``ValueError`` for bytes Pillow cannot decode."""
    try:
        image_format(data)
        return data, None
    except ValueError:
        pass
    try:
        with Image.open(io.BytesIO(data)) as opened:
            original = opened.format
            image = opened.copy()  # the first frame, decoded
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"image bytes are neither PNG nor JPEG, nor an image Pillow decodes ({error})") from error
    if image.mode == "F":  # 32-bit float: integers, which readers scale to 8 bits the same way
        image = image.convert("I")
    elif image.mode not in _PNG_MODES:  # CMYK, YCbCr...: converted as readers convert them
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    exif = image.getexif()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **({"exif": exif} if exif else {}))
    return buffer.getvalue(), original or "unknown"


def validate_row(row: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if a product row (images as bytes, kinds as names) breaks the format; no decoding."""
    for key in ("product_id", "title", "category"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise ValueError(f"row field {key!r} must be a non-empty string, got {row.get(key)!r}")
    images = row.get("images")
    if not isinstance(images, Sequence) or not images:
        raise ValueError(f"product {row['product_id']}: 'images' must be a non-empty list")
    for i, image in enumerate(images):
        where = f"product {row['product_id']} image {i}"
        if not isinstance(image, Mapping):
            raise ValueError(f"{where}: an image is a mapping of image, source, kind, boxes, box_product_ids")
        if not isinstance(image.get("image"), (bytes, bytearray)):
            raise ValueError(f"{where}: no encoded image bytes, got {type(image.get('image')).__name__}")
        try:
            image_format(image["image"])
        except ValueError as error:
            raise ValueError(f"{where}: {error}; store it as PNG or JPEG (as_png_or_jpeg converts it)") from None
        if image.get("kind") not in IMAGE_KINDS:
            raise ValueError(f"{where}: kind {image.get('kind')!r} not in {IMAGE_KINDS}")
        if not image.get("source"):
            raise ValueError(f"{where}: empty source")
        boxes, ids = image.get("boxes"), image.get("box_product_ids")
        if not isinstance(boxes, Sequence) or not isinstance(ids, Sequence) or len(boxes) != len(ids) or not boxes:
            raise ValueError(f"{where}: needs one product id per box and at least the product's own box")
        if ids[0] != row["product_id"]:
            raise ValueError(f"{where}: the first box must be the product itself")
        for box in boxes:
            numbers = isinstance(box, Sequence) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
            if not numbers or not (box[0] < box[2] and box[1] < box[3]):
                raise ValueError(f"{where}: box {box!r} is not [x0, y0, x1, y1] with x0 < x1, y0 < y1")


def _row_nbytes(row: Mapping[str, Any]) -> int:
    """Approximate stored size of a row (images dominate)."""
    return sum(len(image["image"]) + 64 * len(image["boxes"]) for image in row["images"]) + 256


def write_table_atomic(table: pa.Table, path: str | os.PathLike, row_group_size: int = DEFAULT_ROW_GROUP_SIZE) -> None:
    """Write ``table`` as parquet to ``path`` via a temporary file + rename, so no half-written file exists.

    Encoder settings are fixed so the same rows always give the same bytes (no timestamps in parquet).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(
            table.cast(CATALOGUE_SCHEMA),
            tmp,
            row_group_size=row_group_size,
            compression="zstd",
            compression_level=3,
            write_statistics=_STATISTICS_COLUMNS,
            use_dictionary=["category"],
        )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def encode_rows(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Product rows (images as bytes, kinds as names, as :func:`validate_row` takes them) as an arrow table of
    :data:`CATALOGUE_FEATURES`."""
    kind_index = {kind: index for index, kind in enumerate(IMAGE_KINDS)}
    encoded = [
        {
            "product_id": row["product_id"],
            "title": row["title"],
            "category": row["category"],
            "images": [
                {
                    "image": {"bytes": image["image"], "path": None},
                    "source": image["source"],
                    "kind": kind_index[image["kind"]],
                    "boxes": image["boxes"],
                    "box_product_ids": image["box_product_ids"],
                }
                for image in row["images"]
            ],
        }
        for row in rows
    ]
    return pa.Table.from_pylist(encoded, schema=CATALOGUE_SCHEMA)


class ShardWriter:
    """Write the product rows of one split to ``<root>/data/<split>-NNNNN-of-MMMMM.parquet`` files of at most about
    ``max_bytes`` each.

    ``root`` must hold no file of this split yet (``FileExistsError`` otherwise): files of an earlier write would be
    read with the new ones. Use as a context manager; rows are buffered and flushed as whole files, atomically, under
    a temporary name; closing gives them their final ``-of-MMMMM`` names::

        with ShardWriter(root, "train") as writer:
            for row in rows:
                writer.write(row)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        max_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        validate: bool = True,
    ) -> None:
        if not split or not split.replace("_", "").isalnum():
            raise ValueError(f"split names are letters, digits and '_' (they name files), got {split!r}")
        self.root = Path(root)
        self.split = split
        if list_shards(self.root, split):
            raise FileExistsError(f"{self.root / DATA_FOLDER} already holds {split} files; write into an empty folder")
        self.max_bytes = max_bytes
        self.row_group_size = row_group_size
        self.validate = validate
        self.paths: list[Path] = []
        self.num_rows = 0
        self._partial: list[Path] = []
        self._rows: list[Mapping[str, Any]] = []
        self._nbytes = 0

    def write(self, row: Mapping[str, Any]) -> None:
        """Buffer one product row; starts a new file when this one would exceed ``max_bytes``."""
        if self.validate:
            validate_row(row)
        size = _row_nbytes(row)
        if self._rows and self._nbytes + size > self.max_bytes:
            self.flush()
        self._rows.append(row)
        self._nbytes += size

    def flush(self) -> None:
        """Write the buffered rows as the next file (no-op when nothing is buffered)."""
        if not self._rows:
            return
        path = self.root / DATA_FOLDER / f".{self.split}-{len(self._partial):05d}.partial.parquet"
        write_table_atomic(encode_rows(self._rows), path, self.row_group_size)
        self._partial.append(path)
        self.num_rows += len(self._rows)
        self._rows, self._nbytes = [], 0

    def close(self) -> None:
        """Flush the last file and give every file its final name."""
        self.flush()
        count = len(self._partial)
        for index, path in enumerate(self._partial):
            final = path.with_name(shard_name(self.split, index, count))
            os.replace(path, final)
            self.paths.append(final)
        self._partial = []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # On an exception nothing gets a final name (builders write into a staging folder that is then deleted).
        if exc_type is None:
            self.close()


def write_shards(
    rows: Iterable[Mapping[str, Any]],
    root: str | os.PathLike,
    split: str,
    max_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    validate: bool = True,
) -> list[Path]:
    """Write ``rows`` as the ``split`` files of the catalogue at ``root`` and return their paths."""
    with ShardWriter(root, split, max_bytes=max_bytes, validate=validate) as writer:
        for row in rows:
            writer.write(row)
    return writer.paths


def check_card_licence(license: str, license_name: str = "", license_link: str = "") -> None:
    """Raise ``ValueError`` naming the option when the card's licence fields do not go together: a licence id is
    required, and a licence name or link only describe ``other`` (the Hub ignores them otherwise)."""
    if not license or not license.strip():
        raise ValueError("--license (license) must be a Hub licence id, e.g. apache-2.0, cc-by-4.0 or other")
    if license != "other" and (license_name or license_link):
        raise ValueError(
            f"--license-name and --license-link (license_name, license_link) describe --license other, not {license!r}"
        )


def write_dataset_card(
    root: str | os.PathLike,
    pretty_name: str,
    description: str,
    license: str,
    license_name: str = "",
    license_link: str = "",
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<root>/README.md``: the dataset card a Hub dataset repository needs, for the splits written there.

    Its YAML header maps each split to its files (``configs``), lists the features and split sizes (``dataset_info``,
    read from the parquet footers: rows, uncompressed bytes, and the files' size) and the ``license``: an id of
    https://hf.co/docs/hub/repositories-licenses (e.g. ``apache-2.0``), or ``other`` with ``license_name`` (an id of
    your own, e.g. ``my-licence-1.0``) and ``license_link`` (a file of the repository, e.g. ``LICENSE-DATA.md``, or a
    URL), as the Hub documents them. The body is ``description``.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    check_card_licence(license, license_name, license_link)
    root = Path(root)
    splits = _splits_on_disk(root)
    if not splits:
        raise FileNotFoundError(f"{root / DATA_FOLDER} holds no <split>-*.parquet files to describe")
    info = datasets.DatasetInfo(features=CATALOGUE_FEATURES)._to_yaml_dict()
    # `datasets` ignores a split entry without num_bytes (its size in memory; the uncompressed size stands in for it).
    footers = {split: [pq.ParquetFile(path).metadata for path in list_shards(root, split)] for split in splits}
    info["splits"] = [
        {
            "name": split,
            "num_bytes": sum(m.row_group(i).total_byte_size for m in footers[split] for i in range(m.num_row_groups)),
            "num_examples": sum(m.num_rows for m in footers[split]),
        }
        for split in splits
    ]
    info["download_size"] = sum(path.stat().st_size for split in splits for path in list_shards(root, split))
    info["dataset_size"] = sum(split["num_bytes"] for split in info["splits"])
    data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        license_name=license_name or None,
        license_link=license_link or None,
        task_categories=["zero-shot-image-classification", "image-feature-extraction"],
        tags=["e-commerce", "products", "eclip"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"{DATA_FOLDER}/{split}-*"} for split in splits],
            }
        ],
        dataset_info=info,
        eclip_catalogue_format=FORMAT_VERSION,
        **dict(extra_metadata or {}),
    )
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n# {pretty_name}\n\n{description.strip()}\n")
    path = root / CARD_NAME
    path.write_text(str(card), encoding="utf-8")
    return path


def read_card_metadata(root: str | os.PathLike) -> dict[str, Any]:
    """The YAML header of ``<root>/README.md`` as a dict (``{}`` without a card)."""
    from huggingface_hub import DatasetCard

    path = Path(root) / CARD_NAME
    if not path.is_file():
        return {}
    return DatasetCard.load(path).data.to_dict()


def _splits_on_disk(root: Path) -> list[str]:
    """Split names of the files in ``<root>/data``, the standard ones first."""
    names = {path.name.rsplit("-", 3)[0] for path in (root / DATA_FOLDER).glob("*-*-of-*.parquet")}
    return [s for s in SPLITS if s in names] + sorted(names - set(SPLITS))
