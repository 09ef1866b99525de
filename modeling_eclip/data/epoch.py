# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""What one pass of the product stream (`stream.ProductPairStream`) over an epoch gives, and the early stop on a
catalogue whose products are all unusable: without it, a catalogue of a million products with unreadable images would
be streamed whole (hours) before the training loop learns that the epoch gave no batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

COUNTER_NAMES = (
    "skipped_corrupt_images",
    "skipped_single_image_products",
    "skipped_blank_title_products",
    "skipped_no_product_id_products",
    "noncontiguous_products",
    "deferred_duplicates",
)


class UnusableCatalogueError(RuntimeError):
    """The first products of a stream's first epoch were all unusable (fewer than two readable images, a blank title,
    no product id): the catalogue is taken as unreadable as a whole, before one full pass over it."""


@dataclasses.dataclass
class EpochTally:
    """What one pass over an epoch gave, for ``ProductPairStream.last_epoch``, and what the early stop looks at."""

    epoch: int
    from_start: bool
    counters_at_start: dict[str, int]
    products: int = 0  # examples read and taken (not those replayed from a restored state)
    batches: int = 0
    usable: int = 0  # products that gave a pair
    first_error: str | None = None  # the first image decoding error, for the message of the early stop

    def take(self, sample: Mapping[str, Any]) -> None:
        """Counts one product's sample (``stream.make_pair``'s result)."""
        self.products += 1
        self.usable += "rejected" not in sample
        self.first_error = self.first_error or sample.get("error")

    def check_usable(self, counters: Mapping[str, int], limit: int) -> None:
        """Raises :class:`UnusableCatalogueError` with the counts once the first ``limit`` products of the first epoch
        (read from its start) were all unusable; ``limit`` 0: never. Later epochs are not judged: the first gave a
        product, and a shuffle may well put many bad ones first."""
        if not limit or self.epoch != 0 or not self.from_start or self.usable or self.products < limit:
            return
        count = self.count(counters)
        error = f" The first image error: {self.first_error}." if self.first_error else ""
        raise UnusableCatalogueError(
            f"the first {self.products} products of the stream were all unusable: "
            f"{count['skipped_single_image_products']} with fewer than two readable images "
            f"({count['skipped_corrupt_images']} unreadable images), {count['skipped_blank_title_products']} with a "
            f"blank title, {count['skipped_no_product_id_products']} without a product id.{error} The catalogue looks "
            "unreadable as a whole, so the stream stops here rather than read all of it: check the columns "
            "(--image_column, --title_column, --product_id_column) and the image files (relative paths are read from "
            "the folder of the data file that holds them). To read on past a long unusable start, set "
            f"modeling_eclip.data.stream.UNUSABLE_PRODUCTS_LIMIT (now {limit}; 0: never stop early)"
        )

    def count(self, counters: Mapping[str, int]) -> dict[str, int]:
        """The counters' growth during this pass."""
        return {name: counters[name] - self.counters_at_start[name] for name in COUNTER_NAMES}

    def summary(self, counters: Mapping[str, int]) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "from_start": self.from_start,
            "batches": self.batches,
            "products": self.products,
            **self.count(counters),
        }
