# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Product search (paper Sec. 4.2.3): embed a catalogue with `datasets`, index it with faiss, query it.

Embeddings, all L2-normalised so faiss' inner product is the cosine similarity:

* `"image+title"`: the instance embedding h of the image prompted by its title (Sec. 3.4), what the catalogue uses;
* `"image"`: the instance embedding of the image prompted by itself ("find the product in this photo");
* `"title"`: the text embedding g_T(w_cls), compared with instance embeddings as zero-shot classification does.

Not remote code: needs `datasets` and `faiss-cpu` (the `search` extra).
"""

import logging
import os
import uuid
from collections.abc import Sequence
from typing import Any

import datasets
import faiss
import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from ..data.shard_format import require_shards

logger = logging.getLogger(__name__)

EMBEDDING_COLUMN = "embeddings"
EMBEDDING_KINDS = ("image+title", "image", "title")
DEFAULT_BATCH_SIZE = 32


@torch.no_grad()
def embed_products(
    model: Any,
    processor: Any,
    images: Any = None,
    titles: Sequence[str] | None = None,
) -> np.ndarray:
    """L2-normalised product embeddings, `(batch, projection_dim)` float32, of one batch.

    Images and titles give the instance embedding of each image prompted by its title; images alone, the instance
    embedding with the image as its own prompt; titles alone, the text embedding g_T(w_cls).
    """
    if images is None and titles is None:
        raise ValueError("Pass images, titles or both to embed products.")
    inputs = processor(images=images, text=titles).to(model.device, dtype=model.dtype)
    if images is None:
        embeds = model.get_text_features(**inputs, return_dict=True).pooler_output
    else:
        embeds = model.get_instance_features(**inputs, return_dict=True).pooler_output
    return F.normalize(embeds.float(), dim=-1).cpu().numpy()


def load_catalogue(
    data_dir: str | os.PathLike, split: str = "test", kind: str = "catalog", source: str | None = None
) -> datasets.Dataset:
    """One row per product of a shard catalogue (`modeling_eclip/data/shard_format.py`), with its first image of `kind`
    (and `source`, if given) as encoded bytes in an `image` column, its box in that image as `box`.

    Products without such an image are left out, and how many is logged as a warning.
    """
    files = [str(path) for path in require_shards(data_dir, split)]
    # An in-memory Arrow table: no copy in the datasets cache for what is read once per run.
    products = datasets.Dataset(pq.read_table(files))

    def first_image(images: list[dict[str, Any]]) -> dict[str, Any]:
        for image in images:
            if image["kind"] == kind and (source is None or image["source"] == source):
                return {"image": image["image"], "source": image["source"], "box": image["boxes"][0]}
        return {"image": None, "source": None, "box": None}

    catalogue = products.map(first_image, input_columns="images", remove_columns="images", keep_in_memory=True)
    kept = catalogue.filter(lambda image: image is not None, input_columns="image", keep_in_memory=True)
    if len(kept) < len(catalogue):
        wanted = kind if source is None else f"{kind} from {source!r}"
        logger.warning(
            "%d of %d products have no %s image and are left out.", len(catalogue) - len(kept), len(catalogue), wanted
        )
    return kept


class ProductSearchIndex:
    r"""
    A catalogue `datasets.Dataset` with an `embeddings` column and a flat inner-product faiss index over it.

    Build it from products with `ProductSearchIndex.build(model, processor, catalogue)` (embeds with
    `Dataset.map(batched=True)`), or from ready embeddings with `ProductSearchIndex(catalogue_with_embeddings)`.
    Query with `search(image=..., title=...)` or `search_batch(...)`; results are the catalogue rows (without
    image and embedding) with their cosine `score`, best first.
    """

    def __init__(
        self,
        catalogue: datasets.Dataset,
        model: Any = None,
        processor: Any = None,
        string_factory: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        hidden_columns: Sequence[str] = ("image",),
    ):
        if EMBEDDING_COLUMN not in catalogue.column_names:
            raise ValueError(f"The catalogue needs an {EMBEDDING_COLUMN!r} column; use ProductSearchIndex.build.")
        self.model, self.processor, self.batch_size = model, processor, batch_size
        # Flat (exact) inner product unless a faiss factory string asks for an approximate index.
        catalogue.add_faiss_index(
            column=EMBEDDING_COLUMN, string_factory=string_factory, metric_type=faiss.METRIC_INNER_PRODUCT
        )
        self.catalogue = catalogue
        hidden = [column for column in (*hidden_columns, EMBEDDING_COLUMN) if column in catalogue.column_names]
        self.metadata = catalogue.select_columns([name for name in catalogue.column_names if name not in hidden])

    @classmethod
    def build(
        cls,
        model: Any,
        processor: Any,
        catalogue: datasets.Dataset,
        image_column: str = "image",
        title_column: str | None = "title",
        embedding: str = "image+title",
        batch_size: int = DEFAULT_BATCH_SIZE,
        string_factory: str | None = None,
    ) -> "ProductSearchIndex":
        """Embeds every product of `catalogue` (`embedding` is one of `EMBEDDING_KINDS`) and indexes it."""
        if embedding not in EMBEDDING_KINDS:
            raise ValueError(f"embedding must be one of {EMBEDDING_KINDS}, got {embedding!r}.")
        columns = {"image+title": [image_column, title_column], "image": [image_column], "title": [title_column]}
        columns = columns[embedding]
        missing = [column for column in columns if column not in catalogue.column_names]
        if missing:
            raise ValueError(f"The catalogue has no column {missing}; it has {catalogue.column_names}.")

        def embed(*values: list[Any]) -> dict[str, np.ndarray]:
            named = dict(zip(columns, values))
            embeds = embed_products(model, processor, images=named.get(image_column), titles=named.get(title_column))
            return {EMBEDDING_COLUMN: embeds}

        embedded = catalogue.map(
            embed,
            input_columns=columns,
            batched=True,
            batch_size=batch_size,
            keep_in_memory=True,
            # The function holds the model: hashing it for the cache would pickle every weight.
            new_fingerprint=uuid.uuid4().hex,
            desc="Embedding the catalogue",
        )
        return cls(
            embedded,
            model,
            processor,
            string_factory=string_factory,
            batch_size=batch_size,
            hidden_columns=[image_column],
        )

    def __len__(self) -> int:
        return len(self.catalogue)

    def search(self, image: Any = None, title: str | None = None, k: int = 10) -> list[dict[str, Any]]:
        """The `k` best products for one query: an image and a title, a title, or an image."""
        return self.search_batch(
            images=None if image is None else [image], titles=None if title is None else [title], k=k
        )[0]

    def search_batch(
        self, images: Sequence[Any] | None = None, titles: Sequence[str] | None = None, k: int = 10
    ) -> list[list[dict[str, Any]]]:
        """The `k` best products for each query; queries are embedded in batches of `batch_size`."""
        if self.model is None or self.processor is None:
            raise ValueError("This index was built without a model and processor; use search_embeddings.")
        if images is not None and titles is not None and len(images) != len(titles):
            raise ValueError(f"Got {len(images)} query images but {len(titles)} titles; pass one per image.")
        count = len(images) if images is not None else len(titles) if titles is not None else 0
        if count == 0:
            raise ValueError("Pass at least one query image or title.")
        embeds = [
            embed_products(
                self.model,
                self.processor,
                images=None if images is None else list(images[start : start + self.batch_size]),
                titles=None if titles is None else list(titles[start : start + self.batch_size]),
            )
            for start in range(0, count, self.batch_size)
        ]
        return self.search_embeddings(np.concatenate(embeds), k=k)

    def search_embeddings(self, embeddings: np.ndarray, k: int = 10) -> list[list[dict[str, Any]]]:
        """The `k` best products for each row of `(num_queries, D)` L2-normalised query embeddings."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (num_queries, D), got shape {embeddings.shape}.")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        scores, indices = self.catalogue.search_batch(EMBEDDING_COLUMN, embeddings, k=min(k, len(self)))
        results = []
        for row_scores, row_indices in zip(scores, indices):
            rows = self.metadata[[int(index) for index in row_indices]]
            results.append(
                [
                    {"score": float(score), "index": int(index), **{name: rows[name][rank] for name in rows}}
                    for rank, (score, index) in enumerate(zip(row_scores, row_indices))
                ]
            )
        return results


__all__ = ["EMBEDDING_KINDS", "ProductSearchIndex", "embed_products", "load_catalogue"]
