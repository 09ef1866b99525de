# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Read product data from any Hugging Face dataset: a Hub id or a local folder, in our layout or another one.

A :class:`CatalogueSource` names the dataset (``load_dataset``'s path, config and revision) and how its columns map to
what ECLIP needs (:class:`CatalogueColumns`). Two layouts are read, told apart by the type of the image column:

* one product per row (our layout, ``shard_format.py``): the image column is a list of images, or a list of structs
  with an ``image`` field (and optional ``source``, ``kind``, ``boxes``, ``box_product_ids`` fields);
* one image per row, like most public product datasets: the image column is an ``Image`` (or bytes, or a path), and
  consecutive rows with the same product id form one product. Rows of a product must be consecutive within a data
  file (sort or group the dataset by product id); a product id met again later in the file is still read, as a
  second product, and flagged ``noncontiguous`` (the training stream counts these).

:meth:`CatalogueSource.products` streams every product of a split in one normalised form (``PRODUCT_FEATURES``: image
bytes, names of kinds) through ``datasets``, so the training stream shuffles and splits it by node with ``datasets``'
own tools, and a Hub dataset and a local one take the same code path. The schema is checked when a split is opened
(:class:`CatalogueSchemaError` names the column, its type and the option to set), after the split's data files
(``preflight.py``: files that are missing, truncated or hold other columns are named before any row is read); bad
rows (no title, a missing or undecodable image) are left to the consumers, which skip and count them.

Image paths. A dataset that stores paths rather than image bytes is read the same way from any working directory:
:func:`resolve_image_path`, the one rule for every image read from a dataset (training stream, evaluation, search),
resolves a relative path against the folder of the data file holding the row (``--dataset_data_files
train=/x/cat.csv``: ``images/1.png`` is ``/x/images/1.png``; ``/x/shop/data/train-0.parquet``: ``/x/shop/data/...``),
as ``datasets`` reads the ``file_name`` of an image folder's metadata file. Absolute paths and URLs are kept; a URL is
downloaded when decoded (without a network, or for a Hub dataset's relative path, which becomes an ``hf://`` URL, it
is counted as an unreadable image). Unlike the converter (``convert.py``), which copies image bytes into a dataset that
may be published and therefore keeps to the catalogue's folder unless ``--allow-outside-paths``, readers only decode
pixels: absolute paths and ``..`` are followed as written. Only regular files are read, up to
``processing_eclip.MAX_IMAGE_FILE_BYTES`` (``to_rgb_image``).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from ..processing_eclip import _is_url_or_base64
from .preflight import check_card_data_files, check_data_file_patterns, check_split_files, is_remote
from .shard_format import list_shards, migration_hint, old_layout_splits

# Every product as the consumers see it. The image is `image` (encoded bytes) or, for datasets that store paths or
# URLs, `path` (absolute, or a URL: `resolve_image_path`); `kind` is a name (or None); boxes are empty when the dataset
# has none.
PRODUCT_FEATURES = datasets.Features(
    {
        "product_id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "category": datasets.Value("string"),
        "images": datasets.List(
            {
                "image": datasets.Value("binary"),
                "path": datasets.Value("string"),
                "source": datasets.Value("string"),
                "kind": datasets.Value("string"),
                "boxes": datasets.List(datasets.List(datasets.Value("float32"))),
                "box_product_ids": datasets.List(datasets.Value("string")),
            }
        ),
        "noncontiguous": datasets.Value("bool"),
    }
)


# Rows converted from arrow at once (cheaper than one by one).
_READ_BATCH = 64
# `scheme://` of a URL (http, https, hf, s3, ...).
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class CatalogueSchemaError(ValueError):
    """The dataset's columns cannot be read as a product catalogue (missing column, wrong type)."""


@dataclass(frozen=True)
class CatalogueColumns:
    """Which column holds what. The defaults are our layout's names; set them for a dataset laid out differently.

    ``image`` is the image column (a list per product, or one image per row); ``source``, ``kind``, ``boxes`` and
    ``box_product_ids`` name fields of the image structs in a product-per-row dataset, and columns in an
    image-per-row one; a name the dataset lacks is simply not read (``category`` too, but evaluation needs it).
    """

    product_id: str = "product_id"
    title: str = "title"
    image: str = "images"
    category: str = "category"
    source: str = "source"
    kind: str = "kind"
    boxes: str = "boxes"
    box_product_ids: str = "box_product_ids"

    @classmethod
    def option_names(cls) -> dict[str, str]:
        """``{field: command-line option}``, e.g. ``{"image": "--image_column"}``."""
        return {f.name: f"--{f.name}_column" for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class _Layout:
    """What the schema check found: how to read each field of a split."""

    image_per_row: bool
    image_field: str | None  # the image's field inside a struct (product per row), else None
    image_type: str  # "image", "binary" or "path"
    subfields: tuple[str, ...]  # optional fields present: in the struct (product per row) or as columns
    kind_names: tuple[str, ...] | None  # ClassLabel names of the kind, None when it is a string
    category_names: tuple[str, ...] | None  # ClassLabel names of the category
    has_category: bool


@dataclass(frozen=True)
class CatalogueSource:
    """A product dataset: ``load_dataset(name_or_path, config, revision=revision, data_files=data_files)`` and its
    column mapping.

    Args:
        name_or_path: a Hub dataset id (``org/name``) or a local folder (a dataset repository as is, e.g. a
            catalogue written by ``modeling_eclip/data/convert.py``).
        config: the dataset configuration (``load_dataset``'s ``name``); None: the default one.
        revision: a branch, tag or commit of a Hub dataset; None: the main branch.
        columns: the column mapping.
        data_files: ``{split: path or glob (or a list of them)}``, for data kept elsewhere, e.g. in an object store:
            ``CatalogueSource("parquet", data_files={"train": "s3://bucket/shop/data/train-*.parquet"})`` (with
            ``name_or_path`` the file format, as ``load_dataset`` takes it).
    """

    name_or_path: str
    config: str | None = None
    revision: str | None = None
    columns: CatalogueColumns = field(default_factory=CatalogueColumns)
    data_files: dict[str, str | list[str]] | None = None

    def __post_init__(self) -> None:
        path = Path(self.name_or_path)
        if path.is_dir() and not list_shards(path, "*") and old_layout_splits(path):
            raise FileNotFoundError(migration_hint(path))
        if str(self.name_or_path).startswith(("./", "../", "/")) and not path.is_dir():
            raise FileNotFoundError(f"dataset {self.name_or_path} is not a folder")

    def describe(self) -> str:
        """``name[config]@revision`` for messages."""
        config = f"[{self.config}]" if self.config else ""
        revision = f"@{self.revision}" if self.revision else ""
        return f"{self.name_or_path}{config}{revision}"

    # ---------------------------------------------------------------------------------------------- raw access
    def load(self, split: str) -> datasets.IterableDataset:
        """The split as ``datasets`` streams it, images not decoded (``decode(False)``), features resolved."""
        try:
            stream = datasets.load_dataset(
                str(self.name_or_path),
                self.config,
                revision=self.revision,
                data_files=self.data_files,
                split=split,
                streaming=True,
            )
        except ValueError as error:
            if "Unknown split" in str(error) or "Bad split" in str(error):
                raise FileNotFoundError(f"dataset {self.describe()} has no split {split!r} ({error})") from error
            raise
        if stream.features is None:
            stream = stream._resolve_features()
        return stream.decode(False)

    def builder(self) -> datasets.DatasetBuilder:
        """The dataset's builder (data files and the card's split sizes, nothing downloaded)."""
        return datasets.load_dataset_builder(
            str(self.name_or_path), self.config, revision=self.revision, data_files=self.data_files
        )

    def check_files(self, split: str) -> list[str]:
        """The dataset pre-flight of ``split`` (``preflight.py``), before any row is read: the card's and
        ``data_files``' patterns match files, the split has files, and its local parquet / CSV files can be read and
        have the split's columns (``FileNotFoundError`` or ``DataFileError`` naming the file). Returns the split's data
        files (``[]`` for a split the dataset lacks: :meth:`load` names it)."""
        root = self._local_folder()
        if root is not None:
            check_card_data_files(root, self.config)
        if self.data_files:
            check_data_file_patterns(self.data_files, root)
        builder = self.builder()
        files = (builder.config.data_files or {}).get(split)
        if files is None:
            return []
        files = [str(f) for f in files]
        check_split_files(files, split, self.describe(), builder.info.features)
        return files

    def _opened(self, split: str, need_category: bool) -> tuple[list[str], datasets.IterableDataset, _Layout]:
        """The split's data files (checked), its stream and its layout (schema checked)."""
        files = self.check_files(split)
        base = self.load(split)
        return files, base, _check_schema(base.features, self.columns, self.describe(), need_category)

    def _local_folder(self) -> Path | None:
        path = Path(self.name_or_path)
        return path.resolve() if path.is_dir() else None

    def layout(self, split: str, need_category: bool = False) -> _Layout:
        """Check the data files (:meth:`check_files`) and the schema of ``split`` (:class:`CatalogueSchemaError`
        naming the problem); return how to read it."""
        return self._opened(split, need_category)[2]

    # ----------------------------------------------------------------------------------------------- products
    def products(self, split: str, need_category: bool = False) -> datasets.IterableDataset:
        """Every product of ``split`` in the form of ``PRODUCT_FEATURES``, as a ``datasets.IterableDataset`` with one
        shard per data file of the split (so ``shuffle`` shuffles the file order and ``split_dataset_by_node`` can
        give each rank its own files). The data files and the schema are checked here, before any row is read."""
        files, base, layout = self._opened(split, need_category)
        # The folder of each shard's data file, for its relative image paths (a tuple: datasets shards lists only).
        folders = _shard_folders(files, base.n_shards, self._local_folder())
        return datasets.IterableDataset.from_generator(
            _products_of_shards,
            features=PRODUCT_FEATURES,
            gen_kwargs={
                "shards": list(range(base.n_shards)),
                "source": self,
                "split": split,
                "layout": layout,
                "folders": folders,
            },
        )

    def iter_products(self, split: str, need_category: bool = False) -> Iterator[dict[str, Any]]:
        """:meth:`products` as plain dicts, in dataset order (for evaluation and other full passes)."""
        for rows in self.products(split, need_category).iter(batch_size=256):
            for i in range(len(rows["product_id"])):
                yield {name: rows[name][i] for name in rows}

    def split_names(self) -> list[str]:
        """The dataset's splits (those with data files)."""
        return sorted((self.builder().config.data_files or {}).keys())

    def product_values(self, field: str) -> dict[str, str]:
        """``{product id: its title or category}`` over every split, read from those two columns only (no image
        bytes), class labels as names."""
        name = getattr(self.columns, field)
        values = {}
        for split in self.split_names():
            _, base, layout = self._opened(split, need_category=field == "category")
            names = layout.category_names if field == "category" else None
            for row in base.select_columns([self.columns.product_id, name]):
                values[str(row[self.columns.product_id])] = _label(row[name], names)
        return values

    def num_products(self, split: str, layout: _Layout | None = None) -> int | None:
        """Products of ``split`` when they can be known without reading the data (product per row: the card's
        split size, or the parquet footers of a local dataset); None otherwise. ``layout``: the split's, if already
        checked (:meth:`layout`)."""
        if (layout or self.layout(split)).image_per_row:
            return None
        builder = self.builder()
        if builder.info.splits and split in builder.info.splits and builder.info.splits[split].num_examples:
            return builder.info.splits[split].num_examples
        files = (builder.config.data_files or {}).get(split, [])
        if files and all(str(f).endswith(".parquet") and Path(str(f)).is_file() for f in files):
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(str(f)).metadata.num_rows for f in files)
        return None

    def fingerprint(self, split: str) -> list[Any]:
        """What identifies the split's data for an exact resume: its data files (names and sizes of local ones, the
        resolved URLs, with the commit, of Hub ones)."""
        files = (self.builder().config.data_files or {}).get(split, [])
        return [
            [Path(str(f)).name, os.path.getsize(str(f))] if Path(str(f)).is_file() else str(f) for f in sorted(files)
        ]


# ---------------------------------------------------------------------------------------------------- schema
def _feature_type(feature: Any) -> str:
    """``image``, ``binary``, ``string``, ``class_label``, ``int``, ``list``, ``struct`` or the feature's repr."""
    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.ClassLabel):
        return "class_label"
    if isinstance(feature, datasets.Value):
        if feature.dtype in ("binary", "large_binary"):
            return "binary"
        if feature.dtype in ("string", "large_string"):
            return "string"
        if feature.dtype.startswith(("int", "uint")):
            return "int"
        return feature.dtype
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        return "list"
    if isinstance(feature, dict):
        return "struct"
    return type(feature).__name__


_IMAGE_TYPES = {"image": "image", "binary": "binary", "string": "path"}


def _check_schema(features: datasets.Features, columns: CatalogueColumns, where: str, need_category: bool) -> _Layout:
    options = CatalogueColumns.option_names()
    available = ", ".join(f"{name} ({_feature_type(feature)})" for name, feature in features.items())

    def missing(name: str) -> CatalogueSchemaError:
        return CatalogueSchemaError(
            f"dataset {where} has no column {getattr(columns, name)!r} for the product {name.replace('_', ' ')}; "
            f"its columns: {available}. Name the right one with {options[name]}"
        )

    def wrong(name: str, feature: Any, expected: str) -> CatalogueSchemaError:
        return CatalogueSchemaError(
            f"dataset {where}: column {getattr(columns, name)!r} ({options[name]}) is {_feature_type(feature)}, "
            f"expected {expected}"
        )

    for name in ("product_id", "title", "image"):
        if getattr(columns, name) not in features:
            raise missing(name)
    if _feature_type(features[columns.title]) != "string":
        raise wrong("title", features[columns.title], "string")
    if _feature_type(features[columns.product_id]) not in ("string", "int"):
        raise wrong("product_id", features[columns.product_id], "string or integer")
    has_category = columns.category in features
    if need_category and not has_category:
        raise missing("category")
    category_names = None
    if has_category:
        category_type = _feature_type(features[columns.category])
        if category_type not in ("string", "class_label"):
            raise wrong("category", features[columns.category], "string or ClassLabel")
        if category_type == "class_label":
            category_names = tuple(features[columns.category].names)

    image = features[columns.image]
    image_type = _feature_type(image)
    if image_type in _IMAGE_TYPES:  # one image per row
        fields = {
            name: features[getattr(columns, name)] for name in ("source", "kind") if getattr(columns, name) in features
        }
        return _Layout(
            image_per_row=True,
            image_field=None,
            image_type=_IMAGE_TYPES[image_type],
            subfields=tuple(fields),
            kind_names=_kind_names(fields, columns, where),
            category_names=category_names,
            has_category=has_category,
        )
    if image_type != "list":
        raise wrong("image", image, "an Image (one image per row) or a list of images (one product per row)")
    item = image.feature
    item_type = _feature_type(item)
    if item_type in _IMAGE_TYPES:
        return _Layout(False, None, _IMAGE_TYPES[item_type], (), None, category_names, has_category)
    if item_type != "struct":
        raise wrong("image", image, "a list of images or of structs with an image field")
    image_fields = [name for name, sub in item.items() if _feature_type(sub) == "image"]
    image_field = "image" if "image" in item else (image_fields[0] if len(image_fields) == 1 else None)
    if image_field is None or _feature_type(item[image_field]) not in _IMAGE_TYPES:
        raise wrong("image", image, "structs with an 'image' field (Image, bytes or a path)")
    fields = {
        name: item[getattr(columns, name)]
        for name in ("source", "kind", "boxes", "box_product_ids")
        if getattr(columns, name) in item
    }
    return _Layout(
        image_per_row=False,
        image_field=image_field,
        image_type=_IMAGE_TYPES[_feature_type(item[image_field])],
        subfields=tuple(fields),
        kind_names=_kind_names(fields, columns, where),
        category_names=category_names,
        has_category=has_category,
    )


def _kind_names(fields: dict[str, Any], columns: CatalogueColumns, where: str) -> tuple[str, ...] | None:
    if "kind" not in fields:
        return None
    kind_type = _feature_type(fields["kind"])
    if kind_type == "class_label":
        return tuple(fields["kind"].names)
    if kind_type != "string":
        raise CatalogueSchemaError(
            f"dataset {where}: the image kind {columns.kind!r} (--kind_column) is {kind_type}, "
            "expected string or ClassLabel"
        )
    return None


# ------------------------------------------------------------------------------------------------------ rows
def _label(value: Any, names: tuple[str, ...] | None) -> str | None:
    if value is None:
        return None
    return names[value] if names is not None and 0 <= value < len(names) else str(value)


def resolve_image_path(value: str | None, folder: str | None) -> str | None:
    """THE rule for an image path read from a dataset: a relative path is taken from ``folder`` (the folder of the
    data file holding the row, a local path or a URL), never from the working directory; absolute paths, URLs and
    ``data:`` URIs are kept. None for a missing or blank value, and for a relative path without a folder to resolve
    it against. A relative value that is valid base64 and names no file there stays as it is (``to_rgb_image``
    decodes it as base64, as it would have)."""
    if value is None or not str(value).strip():
        return None
    value = str(value)
    if _URL_SCHEME.match(value) or value.startswith("data:") or os.path.isabs(value):
        return value
    if folder is None:
        return None
    if is_remote(folder):
        return posixpath.join(folder, value)
    path = os.path.join(folder, value)  # ".." left to the OS, which follows symbolic links as the file is opened
    return value if not os.path.lexists(path) and _is_url_or_base64(value) else path


def data_file_folder(file: str) -> str:
    """The folder of a data file (a URL's for remote files), what a relative image path in it is read against."""
    return posixpath.dirname(file) if is_remote(file) else os.path.dirname(os.path.abspath(file))


def _shard_folders(files: Sequence[str], n_shards: int, root: Path | None) -> tuple[str | None, ...]:
    """The folder of each shard's data file (shard i is data file i for the file formats ``datasets`` packages);
    the dataset's folder (or None) when the shards are not the files."""
    if len(files) == n_shards:
        return tuple(data_file_folder(file) for file in files)
    return (None if root is None else str(root),) * n_shards


def _image_entry(
    value: Any, image_type: str, extra: dict[str, Any], layout: _Layout, folder: str | None
) -> dict[str, Any]:
    """One image of ``PRODUCT_FEATURES`` from a raw image value and its optional fields (a path resolved against
    ``folder``, :func:`resolve_image_path`)."""
    data, path = None, None
    if image_type == "image" and value is not None:
        data, path = value.get("bytes"), value.get("path")
    elif image_type == "binary":
        data = value
    elif image_type == "path":
        path = value
    return {
        "image": data,
        "path": None if data is not None else resolve_image_path(path, folder),
        "source": None if extra.get("source") is None else str(extra["source"]),
        "kind": _label(extra.get("kind"), layout.kind_names),
        "boxes": extra.get("boxes") or [],
        "box_product_ids": extra.get("box_product_ids") or [],
    }


def _products_of_shards(
    shards: list[int], source: CatalogueSource, split: str, layout: _Layout, folders: tuple[str | None, ...]
) -> Iterator[dict[str, Any]]:
    """The generator behind :meth:`CatalogueSource.products`: the products of the given data files, in order."""
    base = source.load(split)
    columns = source.columns
    for index in shards:
        folder = folders[index]
        rows = _rows(base.shard(num_shards=base.n_shards, index=index), columns, layout)
        if layout.image_per_row:
            yield from _group_image_rows(rows, columns, layout, folder)
            continue
        for row in rows:
            images = []
            for item in row[columns.image] or []:
                if layout.image_field is None:
                    images.append(_image_entry(item, layout.image_type, {}, layout, folder))
                elif item is None:
                    images.append(_image_entry(None, layout.image_type, {}, layout, folder))
                else:
                    extra = {name: item.get(getattr(columns, name)) for name in layout.subfields}
                    images.append(_image_entry(item[layout.image_field], layout.image_type, extra, layout, folder))
            yield _product(row, columns, layout, images, noncontiguous=False)


def _rows(shard: datasets.IterableDataset, columns: CatalogueColumns, layout: _Layout) -> Iterator[dict[str, Any]]:
    """The rows of one data file with only the mapped columns. ``iter`` rather than ``for row in shard``: inside a
    DataLoader worker, ``__iter__`` would give this worker only its share of the files (the training stream's loader
    workers each read the whole stream; see ``ProductPairStream``)."""
    names = [columns.product_id, columns.title, columns.image]
    if layout.has_category:
        names.append(columns.category)
    if layout.image_per_row:
        names += [getattr(columns, name) for name in layout.subfields]
    for batch in shard.select_columns(names).iter(batch_size=_READ_BATCH):
        for i in range(len(batch[columns.product_id])):
            yield {name: batch[name][i] for name in names}


def _product(
    row: dict[str, Any], columns: CatalogueColumns, layout: _Layout, images: list[dict[str, Any]], noncontiguous: bool
) -> dict[str, Any]:
    product_id = row[columns.product_id]
    return {
        "product_id": None if product_id is None else str(product_id),
        "title": row[columns.title],
        "category": _label(row[columns.category], layout.category_names) if layout.has_category else None,
        "images": images,
        "noncontiguous": noncontiguous,
    }


def _group_image_rows(
    rows: Iterator[dict[str, Any]], columns: CatalogueColumns, layout: _Layout, folder: str | None
) -> Iterator[dict[str, Any]]:
    """Consecutive rows with the same product id as one product (one data file)."""
    seen: set[str] = set()
    first: dict[str, Any] | None = None
    images: list[dict[str, Any]] = []
    for row in rows:
        key = row[columns.product_id]
        key = None if key is None else str(key)
        if first is not None and key != first["key"]:
            yield _product(first["row"], columns, layout, images, noncontiguous=first["key"] in seen)
            seen.add(first["key"])
            first, images = None, []
        if first is None:
            first = {"key": key, "row": row}
        extra = {name: row[getattr(columns, name)] for name in layout.subfields}
        images.append(_image_entry(row[columns.image], layout.image_type, extra, layout, folder))
    if first is not None:
        yield _product(first["row"], columns, layout, images, noncontiguous=first["key"] in seen)


def image_input(image: dict[str, Any]) -> bytes | str | None:
    """What to decode for one image of ``PRODUCT_FEATURES``: its bytes, else its path (absolute, or a URL: resolved by
    :func:`resolve_image_path` when the product was read) (None when neither)."""
    return image["image"] if image.get("image") is not None else image.get("path")


def read_split(source: CatalogueSource | str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """Every product of ``split`` of a catalogue (a :class:`CatalogueSource`, or a local folder or Hub id in our
    layout) as ``PRODUCT_FEATURES`` dicts."""
    if not isinstance(source, CatalogueSource):
        source = CatalogueSource(str(source))
    return list(source.iter_products(split))
