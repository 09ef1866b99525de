# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""`DatasetArguments`: the dataset options (which dataset, which of its columns hold what) that the pretraining and
evaluation command lines share, as `HfArgumentParser` fields, and the `CatalogueSource` they name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .source import CatalogueColumns, CatalogueSource


@dataclass
class DatasetArguments:
    """The dataset options that pretraining, evaluation and the benchmark share (``HfArgumentParser`` fields; each is
    also a command-line flag, ``--dataset_name`` or ``--dataset-name``)."""

    dataset_name: str = field(
        default="data/demo",
        metadata={
            "aliases": ["--data"],
            "help": "The product dataset: a Hub dataset id (org/name) or a local folder (a catalogue written by "
            "modeling_eclip/data/convert.py, or any dataset load_dataset reads). Streamed with "
            "load_dataset(..., streaming=True).",
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub dataset (pin it for reproducible runs)."}
    )
    product_id_column: str = field(
        default="product_id", metadata={"help": "Column of the product id (rows of one image are grouped by it)."}
    )
    title_column: str = field(default="title", metadata={"help": "Column of the product title."})
    image_column: str = field(
        default="images",
        metadata={
            "help": "Column of the images: a list per product, or one Image per row (grouped by product id). Image "
            "paths relative to the dataset are read from the folder of the data file that holds them, never from the "
            "working directory; absolute paths and URLs as they are."
        },
    )
    category_column: str = field(default="category", metadata={"help": "Column of the category (evaluation)."})
    source_column: str = field(
        default="source", metadata={"help": "Field or column of who took each image (optional)."}
    )
    kind_column: str = field(
        default="kind", metadata={"help": "Field or column of each image's kind: catalog, customer, ad (optional)."}
    )
    dataset_data_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "SPLIT=PATH_OR_GLOB entries (several per split allowed) for data outside a dataset repository, "
            "e.g. in an object store: --dataset_name parquet --dataset_data_files "
            "'train=s3://bucket/shop/data/train-*.parquet' (load_dataset's data_files). A local path or glob that "
            "matches no file is an error naming it."
        },
    )

    def catalogue_source(self) -> CatalogueSource:
        """The :class:`CatalogueSource` these options name."""
        return CatalogueSource(
            self.dataset_name,
            config=self.dataset_config,
            revision=self.dataset_revision,
            columns=CatalogueColumns(
                product_id=self.product_id_column,
                title=self.title_column,
                image=self.image_column,
                category=self.category_column,
                source=self.source_column,
                kind=self.kind_column,
            ),
            data_files=parse_data_files(self.dataset_data_files),
        )


def parse_data_files(entries: list[str] | None) -> dict[str, list[str]] | None:
    """``["train=a/*.parquet", "test=b.parquet"]`` as ``{"train": ["a/*.parquet"], "test": ["b.parquet"]}``."""
    if not entries:
        return None
    data_files: dict[str, list[str]] = {}
    for entry in entries:
        split, sep, pattern = entry.partition("=")
        if not sep or not split.strip() or not pattern.strip():
            raise ValueError(f"--dataset_data_files takes SPLIT=PATH_OR_GLOB entries, got {entry!r}")
        data_files.setdefault(split.strip(), []).append(pattern.strip())
    return data_files


DATASET_ARGUMENT_NAMES = tuple(f.name for f in dataclasses.fields(DatasetArguments))
