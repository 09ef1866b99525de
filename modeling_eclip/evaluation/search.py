# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Product search (paper Sec. 4.2.3): embed a catalogue with `datasets`, index it with faiss, query it.

Embeddings, all L2-normalised so faiss' inner product is the cosine similarity:

* `"image+title"`: the instance embedding h of the image prompted by its title (Sec. 3.4), what the catalogue uses;
* `"image"`: the instance embedding of the image prompted by itself ("find the product in this photo");
* `"title"`: the text embedding g_T(w_cls), compared with instance embeddings as zero-shot classification does.

Not remote code: needs `datasets` and `faiss-cpu` (the `search` extra).
"""

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import faiss
import numpy as np
import torch
import torch.nn.functional as F

from ..data.files import file_sha256
from ..data.source import CatalogueSource, image_input
from ..processing_eclip import check_texts, to_rgb_images
from .search_index import (
    INDEX_FORMAT_VERSION,
    PROBE_TITLE,
    check_model_probe,
    check_ready_index,
    checked_queries,
    id_map,
    probe_image,
    product_ids_sha256,
    read_index_info,
    reads_from,
)

logger = logging.getLogger(__name__)

EMBEDDING_COLUMN = "embeddings"
EMBEDDING_KINDS = ("image+title", "image", "title")
DEFAULT_BATCH_SIZE = 32
# faiss asks for about 39 training vectors per IVF list; 256 lists x 39, or more for bigger indexes via train_size.
DEFAULT_TRAIN_SIZE = 100_000
INDEX_ADD_BATCH = 10_000
INDEX_FILE = "index.faiss"
INDEX_INFO_FILE = "search_index.json"
CATALOGUE_FOLDER = "catalogue"


@torch.no_grad()
def embed_products(
    model: Any,
    processor: Any,
    images: Any = None,
    titles: Sequence[str] | None = None,
    image_names: Sequence[str] | None = None,
    title_names: Sequence[str] | None = None,
) -> np.ndarray:
    """L2-normalised product embeddings, `(batch, projection_dim)` float32, of one batch.

    Images and titles give the instance embedding of each image prompted by its title; images alone, the instance
    embedding with the image as its own prompt; titles alone, the text embedding g_T(w_cls). Images decode through
    `to_rgb_image` and titles follow `check_texts` (a blank title is an error); errors name `image_names[i]` /
    `title_names[i]` (default `images[i]` / `titles[i]`).
    """
    if images is None and titles is None:
        raise ValueError("Pass images, titles or both to embed products.")
    if images is not None:
        images = to_rgb_images(list(images), "images", image_names)
    if titles is not None:
        titles = check_texts(list(titles), "titles", title_names)
    inputs = processor(images=images, text=titles).to(model.device, dtype=model.dtype)
    if images is None:
        embeds = model.get_text_features(**inputs, return_dict=True).pooler_output
    else:
        embeds = model.get_instance_features(**inputs, return_dict=True).pooler_output
    return F.normalize(embeds.float(), dim=-1).cpu().numpy()


def load_catalogue(
    dataset: CatalogueSource | str | os.PathLike, split: str = "test", kind: str = "catalog", source: str | None = None
) -> datasets.Dataset:
    """One row per product of a catalogue (a `CatalogueSource`, or a local folder / Hub id in our layout) with its
    first image of `kind` (and `source`, if given) in an `image` column (encoded bytes, or a path), its box in that
    image as `box`.

    Products without such an image are left out, and how many is logged as a warning.
    """
    if not isinstance(dataset, CatalogueSource):
        dataset = CatalogueSource(str(dataset))

    def first_image(images: list[dict[str, Any]]) -> dict[str, Any]:
        for image in images:
            if image["kind"] == kind and (source is None or image["source"] == source) and image_input(image):
                box = image["boxes"][0] if image["boxes"] else None
                return {"image": image_input(image), "source": image["source"], "box": box}
        return {"image": None, "source": None, "box": None}

    rows = [
        {
            "product_id": row["product_id"],
            "title": row["title"],
            "category": row["category"],
            **first_image(row["images"]),
        }
        for row in dataset.iter_products(split)
    ]
    if not rows:
        raise ValueError(f"split {split!r} of {dataset.describe()} has no products")
    # In memory: no copy in the datasets cache for what is read once per run.
    catalogue = datasets.Dataset.from_list(rows)
    kept = catalogue.filter(lambda image: image is not None, input_columns="image", keep_in_memory=True)
    wanted = kind if source is None else f"{kind} from {source!r}"
    if len(kept) == 0:
        raise ValueError(
            f"none of the {len(catalogue)} products of split {split!r} of {dataset.describe()} has a {wanted} image; "
            "choose another kind or source"
        )
    if len(kept) < len(catalogue):
        logger.warning(
            "%d of %d products have no %s image and are left out.", len(catalogue) - len(kept), len(catalogue), wanted
        )
    return kept


def _trained_index(catalogue: datasets.Dataset, string_factory: str, dim: int, train_size: int, seed: int) -> Any:
    """An empty faiss inner-product index from `string_factory`, trained (if it needs it) on random rows."""
    try:
        index = faiss.index_factory(dim, string_factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ValueError(f"faiss cannot build the index {string_factory!r}: {error}") from error
    if not index.is_trained:
        if isinstance(train_size, bool) or not isinstance(train_size, (int, np.integer)) or train_size < 1:
            raise ValueError(f"train_size must be >= 1 for the index {string_factory!r}, got {train_size!r}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
        generator = np.random.default_rng(seed)
        rows = np.sort(generator.choice(len(catalogue), size=min(train_size, len(catalogue)), replace=False))
        sample = np.concatenate(list(_embedding_batches(catalogue.select(rows), INDEX_ADD_BATCH)))
        try:
            index.train(sample)
        except RuntimeError as error:
            raise ValueError(
                f"faiss cannot train {string_factory!r} on {len(rows)} products: {error}; use a smaller index"
            ) from error
    return index


def _embedding_batches(catalogue: datasets.Dataset, batch_size: int) -> Iterator[np.ndarray]:
    """The catalogue's embeddings as contiguous float32 arrays of `batch_size` rows, in order (memory-mapped
    catalogues are read a batch at a time)."""
    embeddings = catalogue.select_columns([EMBEDDING_COLUMN]).with_format("numpy")
    for batch in embeddings.iter(batch_size=batch_size):
        yield np.ascontiguousarray(batch[EMBEDDING_COLUMN], dtype=np.float32)


def exact_top_k(catalogue: datasets.Dataset, queries: np.ndarray, k: int, chunk_size: int = 1_000_000) -> np.ndarray:
    """Row numbers of each query's `k` largest inner products over the catalogue's embeddings, by brute force over
    chunks (so a memory-mapped catalogue larger than memory works too)."""
    _check_count(k, "k")
    if len(catalogue) == 0:
        raise ValueError("The catalogue is empty: there is nothing to search.")
    first = catalogue.select_columns([EMBEDDING_COLUMN]).with_format("numpy")[0][EMBEDDING_COLUMN]
    queries = checked_queries(queries, len(first), "queries")
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), 0), np.int64)
    for start, chunk in zip(range(0, len(catalogue), chunk_size), _embedding_batches(catalogue, chunk_size)):
        scores, rows = faiss.knn(queries, chunk, min(k, len(chunk)), metric=faiss.METRIC_INNER_PRODUCT)
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_rows = np.concatenate([best_rows, rows + start], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
        best_rows = np.take_along_axis(best_rows, keep, axis=1)
    return best_rows


class ProductSearchIndex:
    r"""
    A catalogue `datasets.Dataset` with an `embeddings` column and an inner-product faiss index over it.

    Build it from products with `ProductSearchIndex.build(model, processor, catalogue)` (embeds with
    `Dataset.map(batched=True)`), or from ready embeddings with `ProductSearchIndex(catalogue_with_embeddings)`.
    Query with `search(image=..., title=...)` or `search_batch(...)`; results are the catalogue rows (without
    image and embedding) with their `score`, best first.

    The index is exact (`"Flat"`) unless `string_factory` names another faiss index (`"HNSW32"`, `"IVF4096,PQ32"`,
    `"IVF4096,PQ32,Refine(SQ8)"`, ...: https://github.com/facebookresearch/faiss/wiki/The-index-factory). Indexes that
    need training are trained on `train_size` rows drawn at random (the first rows of a catalogue sorted by category
    would give clusters of one category). `search_parameters` are faiss' run-time knobs, e.g. `"nprobe=32"` or
    `"efSearch=64"`; `recall_at_k` measures what an approximate index loses against exact search. `save(directory)`
    writes the catalogue and the index beside it with their fingerprints; `ProductSearchIndex.load(directory)`
    memory-maps them back and refuses parts (or a model) that do not belong together. A ready `faiss_index` over the
    catalogue's embeddings, in row order, is used as it is.
    """

    def __init__(
        self,
        catalogue: datasets.Dataset,
        model: Any = None,
        processor: Any = None,
        string_factory: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        hidden_columns: Sequence[str] = ("image",),
        train_size: int = DEFAULT_TRAIN_SIZE,
        search_parameters: str | None = None,
        seed: int = 0,
        faiss_index: Any = None,
    ):
        if len(catalogue) == 0:
            raise ValueError("The catalogue is empty: there is nothing to search.")
        if EMBEDDING_COLUMN not in catalogue.column_names:
            raise ValueError(f"The catalogue needs an {EMBEDDING_COLUMN!r} column; use ProductSearchIndex.build.")
        _check_count(batch_size, "batch_size")
        if string_factory is not None and (not isinstance(string_factory, str) or not string_factory.strip()):
            raise ValueError(
                f"string_factory must be a faiss index factory string such as 'HNSW32', got {string_factory!r}."
            )
        if search_parameters is not None and not isinstance(search_parameters, str):
            raise ValueError(f"search_parameters must be a string such as 'nprobe=32', got {search_parameters!r}.")
        self.dim, self.embeddings_sha256 = _check_catalogue_embeddings(catalogue)
        self.model, self.processor, self.batch_size = model, processor, batch_size
        self.string_factory = string_factory or "Flat"
        if faiss_index is None:
            faiss_index = _trained_index(catalogue, self.string_factory, self.dim, train_size, seed)
            row_ids = id_map(faiss_index) is not None
            for start, batch in zip(
                range(0, len(catalogue), INDEX_ADD_BATCH), _embedding_batches(catalogue, INDEX_ADD_BATCH)
            ):
                try:
                    if not row_ids:
                        faiss_index.add(batch)
                    else:  # an IDMap holds ids, not row numbers, unless it is given the row numbers as ids
                        faiss_index.add_with_ids(batch, np.arange(start, start + len(batch), dtype=np.int64))
                except RuntimeError as error:
                    raise ValueError(f"faiss cannot add the catalogue to {self.string_factory!r}: {error}") from error
        else:
            check_ready_index(faiss_index, len(catalogue), self.dim)
        self.faiss_index = faiss_index
        self.search_parameters = search_parameters
        if search_parameters:
            try:
                faiss.ParameterSpace().set_index_parameters(faiss_index, search_parameters)
            except RuntimeError as error:
                raise ValueError(
                    f"faiss cannot apply search_parameters {search_parameters!r} to the index {self.string_factory!r} "
                    f"({str(error).rsplit(':', 1)[-1].strip()}); name knobs of that index, e.g. nprobe for IVF, "
                    "efSearch for HNSW."
                ) from error
        self.catalogue = catalogue
        self.hidden_columns = list(hidden_columns)
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
        **index_kwargs: Any,
    ) -> "ProductSearchIndex":
        """Embeds every product of `catalogue` (`embedding` is one of `EMBEDDING_KINDS`) and indexes it;
        `index_kwargs` (`train_size`, `search_parameters`, `seed`) go to the constructor."""
        if embedding not in EMBEDDING_KINDS:
            raise ValueError(f"embedding must be one of {EMBEDDING_KINDS}, got {embedding!r}.")
        if len(catalogue) == 0:
            # Dataset.map over no rows adds no embeddings column: say what is wrong, not what is missing.
            raise ValueError("The catalogue is empty (0 rows): there are no products to index.")
        columns = {"image+title": [image_column, title_column], "image": [image_column], "title": [title_column]}
        columns = columns[embedding]
        missing = [column for column in columns if column not in catalogue.column_names]
        if missing:
            raise ValueError(f"The catalogue has no column {missing}; it has {catalogue.column_names}.")

        def embed(*values: list[Any]) -> dict[str, np.ndarray]:
            *values, indices = values
            named = dict(zip(columns, values))
            rows = _row_names(catalogue, indices)
            embeds = embed_products(
                model,
                processor,
                images=named.get(image_column),
                titles=named.get(title_column),
                image_names=[f"the {image_column!r} of {row}" for row in rows],
                title_names=[f"the {title_column!r} of {row}" for row in rows],
            )
            return {EMBEDDING_COLUMN: embeds}

        embedded = catalogue.map(
            embed,
            input_columns=columns,
            with_indices=True,
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
            **index_kwargs,
        )

    def __len__(self) -> int:
        return len(self.catalogue)

    def save(self, directory: str | os.PathLike) -> None:
        """Writes the catalogue (`datasets.Dataset.save_to_disk`, embeddings included), the faiss index beside it and
        what built it, so that `ProductSearchIndex.load(directory)` gives the same results without re-embedding.

        Fingerprints go with them: the product ids in row order, the embeddings, the index file, and the embeddings
        of a fixed probe by the model (when the index has one), so `load` refuses parts that do not belong together.
        Saving into the folder an index was loaded from rewrites the index file and its info beside the catalogue
        it reads from (`datasets` cannot overwrite the files it memory-maps), if the catalogue is still that one."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        catalogue_folder = directory / CATALOGUE_FOLDER
        fingerprints = {"product_ids": product_ids_sha256(self.catalogue), "embeddings": self.embeddings_sha256}
        if reads_from(self.catalogue, catalogue_folder):
            on_disk = datasets.load_from_disk(str(catalogue_folder))
            if fingerprints != {
                "product_ids": product_ids_sha256(on_disk),
                "embeddings": _check_catalogue_embeddings(on_disk)[1],
            }:
                raise ValueError(
                    f"This index's catalogue is read from {catalogue_folder} and differs from it, so it cannot be "
                    "saved there; save it to another folder."
                )
        else:
            self.catalogue.save_to_disk(catalogue_folder)
        index_file = directory / INDEX_FILE
        faiss.write_index(self.faiss_index, str(index_file))
        info = {
            "format_version": INDEX_FORMAT_VERSION,
            "string_factory": self.string_factory,
            "search_parameters": self.search_parameters,
            "num_products": len(self),
            "dim": self.dim,
            "hidden_columns": self.hidden_columns,
            "fingerprints": {**fingerprints, "index_file": file_sha256(index_file)},
            "model_probe": None if self.model is None else _model_probe(self.model, self.processor),
        }
        # Written last: a save cut short leaves fingerprints that do not match, which load refuses.
        (directory / INDEX_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        model: Any = None,
        processor: Any = None,
        search_parameters: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> "ProductSearchIndex":
        """The index `save` wrote, its catalogue memory-mapped from disk; `search_parameters` override the saved
        ones.

        Refuses (a ValueError naming the part) an index file, a catalogue or a `model` / `processor` other than those
        it was saved with: another catalogue's rows, the same rows in another order, or another model's queries
        would give wrong products for every hit."""
        directory = Path(directory)
        missing = [name for name in (INDEX_INFO_FILE, INDEX_FILE, CATALOGUE_FOLDER) if not (directory / name).exists()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a saved ProductSearchIndex: it has no {', '.join(missing)}.")
        info = read_index_info(directory / INDEX_INFO_FILE)
        fingerprints = info.get("fingerprints")
        if fingerprints is None:
            logger.warning(
                "%s was saved without fingerprints (format %s): nothing checks that its index file, catalogue and "
                "model belong together; save it again to add them.",
                directory,
                info["format_version"],
            )
        index_file = directory / INDEX_FILE
        if fingerprints is not None and file_sha256(index_file) != fingerprints["index_file"]:
            raise ValueError(
                f"{index_file} is not the index saved with {directory / CATALOGUE_FOLDER}: they do not belong "
                "together; save the index again, or rebuild it."
            )
        try:
            faiss_index = faiss.read_index(str(index_file))
        except RuntimeError as error:
            raise ValueError(f"faiss cannot read {index_file}: {error}; save the index again.") from error
        catalogue = datasets.load_from_disk(str(directory / CATALOGUE_FOLDER))
        if not isinstance(catalogue, datasets.Dataset):
            raise ValueError(f"{directory / CATALOGUE_FOLDER} holds a {type(catalogue).__name__}, not one catalogue.")
        index = cls(
            catalogue,
            model,
            processor,
            string_factory=info["string_factory"],
            batch_size=batch_size,
            hidden_columns=info["hidden_columns"],
            search_parameters=search_parameters if search_parameters is not None else info["search_parameters"],
            faiss_index=faiss_index,
        )
        if fingerprints is not None:
            for part, found in (
                ("product ids", product_ids_sha256(catalogue)),
                ("embeddings", index.embeddings_sha256),
            ):
                if found != fingerprints["product_ids" if part == "product ids" else part]:
                    raise ValueError(
                        f"{directory / CATALOGUE_FOLDER} is not the catalogue the index was built on: its {part} "
                        "differ or are in another order, so every hit would name the wrong product. Put the index's "
                        "own catalogue back, or rebuild the index."
                    )
        if model is not None and processor is not None:
            check_model_probe(info, lambda: _model_probe(model, processor), directory / INDEX_INFO_FILE)
        return index

    def recall_at_k(self, queries: np.ndarray, k: int = 10, exact: np.ndarray | None = None) -> float:
        """Mean fraction of each query's exact top `k` (inner product over the stored embeddings, by brute force, or
        `exact` from `exact_top_k` when it was computed already) that the index returns in its top `k`: 1.0 for the
        flat index, what an approximate one loses otherwise."""
        _check_count(k, "k")
        queries = checked_queries(queries, self.dim, "queries")
        k = min(k, len(self))  # past the catalogue, all of it
        _, found = self.faiss_index.search(queries, k)
        exact = exact_top_k(self.catalogue, queries, k) if exact is None else np.asarray(exact)
        if exact.shape != (len(queries), k):
            raise ValueError(
                f"exact must be exact_top_k's ({len(queries)}, {k}) row numbers for these queries and k, got shape "
                f"{exact.shape}."
            )
        return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist())]))

    def search(self, image: Any = None, title: str | None = None, k: int = 10) -> list[dict[str, Any]]:
        """The `k` best products for one query: an image and a title, a title, or an image."""
        return self._search_queries(
            images=None if image is None else [image],
            titles=None if title is None else [title],
            k=k,
            image_names=["image"],
            title_names=["title"],
        )[0]

    def search_batch(
        self, images: Sequence[Any] | None = None, titles: Sequence[str] | None = None, k: int = 10
    ) -> list[list[dict[str, Any]]]:
        """The `k` best products for each query; queries are embedded in batches of `batch_size`. Titles follow
        `check_texts` (a blank title is an error); errors name the query, `images[i]` / `titles[i]`."""
        for name, values in (("images", images), ("titles", titles)):
            if values is not None and not isinstance(values, (list, tuple)):
                raise ValueError(
                    f"{name} must be a list (one per query), got {type(values).__name__}; search() takes one query."
                )
        return self._search_queries(images, titles, k)

    def _search_queries(
        self,
        images: Sequence[Any] | None,
        titles: Sequence[str] | None,
        k: int,
        image_names: Sequence[str] | None = None,
        title_names: Sequence[str] | None = None,
    ) -> list[list[dict[str, Any]]]:
        if self.model is None or self.processor is None:
            raise ValueError("This index was built without a model and processor; use search_embeddings.")
        _check_count(k, "k")
        if images is not None and titles is not None and len(images) != len(titles):
            raise ValueError(f"Got {len(images)} query images but {len(titles)} titles; pass one per image.")
        count = len(images) if images is not None else len(titles) if titles is not None else 0
        if count == 0:
            raise ValueError("Pass at least one query image or title.")
        # Named by their position in the whole call, not in the embedding batch.
        image_names = image_names or [f"images[{index}]" for index in range(count)]
        title_names = title_names or [f"titles[{index}]" for index in range(count)]
        embeds = []
        for start in range(0, count, self.batch_size):
            window = slice(start, start + self.batch_size)
            embeds.append(
                embed_products(
                    self.model,
                    self.processor,
                    images=None if images is None else list(images[window]),
                    titles=None if titles is None else list(titles[window]),
                    image_names=image_names[window],
                    title_names=title_names[window],
                )
            )
        return self.search_embeddings(np.concatenate(embeds), k=k)

    def search_embeddings(self, embeddings: np.ndarray, k: int = 10) -> list[list[dict[str, Any]]]:
        """The `k` best products for each row of `(num_queries, D)` L2-normalised query embeddings."""
        _check_count(k, "k")
        embeddings = checked_queries(embeddings, self.dim, "embeddings")
        scores, indices = self.faiss_index.search(embeddings, min(k, len(self)))
        results = []
        for row_scores, row_indices in zip(scores, indices):
            # An approximate index may find fewer than k products (faiss pads with -1).
            found = row_indices >= 0
            row_scores, row_indices = row_scores[found], row_indices[found]
            # A catalogue of embeddings alone has no other columns (and a Dataset without columns has no rows).
            rows = self.metadata[[int(index) for index in row_indices]] if self.metadata.column_names else {}
            results.append(
                [
                    {"score": float(score), "index": int(index), **{name: rows[name][rank] for name in rows}}
                    for rank, (score, index) in enumerate(zip(row_scores, row_indices))
                ]
            )
        return results


def _check_count(value: Any, name: str) -> None:
    """A positive int (not a bool, which Python counts as one)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _row_names(catalogue: datasets.Dataset, indices: Sequence[int]) -> list[str]:
    """`catalogue row 10 (product_id 'p7')` for each row index: what an error about a catalogue row says."""
    if "product_id" not in catalogue.column_names:
        return [f"catalogue row {index}" for index in indices]
    product_ids = catalogue.select_columns("product_id")[list(indices)]["product_id"]
    return [f"catalogue row {index} (product_id {pid!r})" for index, pid in zip(indices, product_ids)]


def _check_catalogue_embeddings(catalogue: datasets.Dataset, chunk_size: int = INDEX_ADD_BATCH) -> tuple[int, str]:
    """The embeddings' dimension D and the sha256 of their float32 bytes in row order (what `save` fingerprints),
    after checking that every row has D finite values (faiss would index NaN, and a ragged column fails inside faiss
    with a bare error); errors name the row and its product id. Reads numpy batches, so a memory-mapped catalogue of
    millions is checked at memory speed."""
    embeddings = catalogue.select_columns([EMBEDDING_COLUMN]).with_format("numpy")
    dimension = None
    digest = hashlib.sha256()
    for start in range(0, len(catalogue), chunk_size):
        try:  # the common case, one float array per chunk; row by row only to name a bad row
            chunk = np.asarray(embeddings[start : start + chunk_size][EMBEDDING_COLUMN], dtype=np.float32)
        except (TypeError, ValueError):
            chunk = None
        if chunk is not None and chunk.ndim == 2 and chunk.shape[1] > 0 and np.isfinite(chunk).all():
            dimension = dimension if dimension is not None else chunk.shape[1:]
            if chunk.shape[1:] == dimension:
                digest.update(np.ascontiguousarray(chunk).tobytes())
                continue
        rows = catalogue.select_columns(EMBEDDING_COLUMN)[start : start + chunk_size][EMBEDDING_COLUMN]
        for offset, row in enumerate(rows):
            row = np.asarray(row if row is not None else [], dtype=np.float32)
            dimension = dimension if dimension is not None else row.shape
            problem = None
            if row.ndim != 1 or row.shape != dimension or row.size == 0:
                problem = f"has shape {row.shape}, not {dimension} like the rows before it"
            elif not np.isfinite(row).all():
                problem = "has NaN or infinite values"
            if problem:
                (name,) = _row_names(catalogue, [start + offset])
                raise ValueError(f"The {EMBEDDING_COLUMN!r} of {name} {problem}.")
            digest.update(row.tobytes())
    return int(dimension[0]), digest.hexdigest()


def _model_probe(model: Any, processor: Any) -> dict[str, list[float]]:
    """The model's embeddings of a fixed image and title for each `EMBEDDING_KINDS`: what a loaded index compares
    a model with (queries of any kind must be comparable with the catalogue's embeddings)."""
    image = probe_image()
    queries = {"image+title": {"images": [image], "titles": [PROBE_TITLE]}, "image": {"images": [image]}}
    queries["title"] = {"titles": [PROBE_TITLE]}
    return {kind: embed_products(model, processor, **query)[0].tolist() for kind, query in queries.items()}


__all__ = ["EMBEDDING_KINDS", "ProductSearchIndex", "embed_products", "exact_top_k", "load_catalogue"]
