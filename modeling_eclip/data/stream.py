# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Streaming product-pair pipeline: catalogue shards -> batches of (x, x+, text, product id) for ECLIP pretraining.

Pipeline (one process per rank)::

    parquet shards --datasets streaming--> shuffle(seed, buffer) --split_dataset_by_node--> examples
      --(decode processes, PairJob) pick two different images of the product + decode--> samples
      --(main process) batcher: no product twice in a batch--> ProductPairCollator (EclipProcessor) --> batches

The decode processes and the batcher are in ``batching.py``.

Exact resume. ``datasets`` can checkpoint a streaming dataset, but its ``state_dict`` does not hold the content of a
shuffle buffer ("examples from shuffle buffers are lost when resuming", see ``IterableDataset.state_dict``). The
stream therefore checkpoints its position as (epoch, number of examples of that epoch consumed) plus the positions
of the examples held over for the next batch. Shuffling depends only on (seed, epoch) via ``set_epoch`` and the image
pair of an example only on (seed, epoch, position), so re-reading the epoch and skipping the consumed examples (without
decoding them) gives exactly the batches an uninterrupted run would have produced.

This module is used by the training loop and evaluation; it is not part of the remote code of a checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image, ImageEnhance

from ..processing_eclip import is_blank_text, to_rgb_image
from .batching import DistinctBatcher, decode_in_order
from .epoch import COUNTER_NAMES, EpochTally
from .epoch import UnusableCatalogueError as UnusableCatalogueError  # what the stream raises, importable here
from .source import CatalogueSource, image_input

DEFAULT_SHUFFLE_BUFFER = 1000
DEFAULT_BATCH_SIZE = 32
DEFAULT_NUM_WORKERS = 2
# Rows read from the parquet stream at once (arrow -> python conversion is cheaper in batches).
_READ_BATCH = 64
# The first epoch stops with UnusableCatalogueError once its first this many products were all unusable (0: never):
# far more than a healthy catalogue's bad start, far fewer than a large unreadable catalogue (`epoch.py`). Read when a
# stream is made.
UNUSABLE_PRODUCTS_LIMIT = 1000
# The counter of each reason `make_pair` rejects a product for.
REJECTION_COUNTERS = {
    "single_image": "skipped_single_image_products",
    "blank_title": "skipped_blank_title_products",
    "no_product_id": "skipped_no_product_id_products",
}


def product_id_to_int(product_id: str) -> int:
    """Stable signed int64 of a string product id (first 8 bytes of its blake2b digest), equal on every host/run."""
    digest = hashlib.blake2b(product_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def load_product_stream(
    source: CatalogueSource | str | os.PathLike,
    split: str = "train",
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> datasets.IterableDataset:
    """Stream the products of a catalogue split, shuffled with ``seed`` and split across ``world_size`` ranks.

    ``source`` is a :class:`~modeling_eclip.data.source.CatalogueSource` (any dataset, with a column mapping) or a
    local folder / Hub id in our layout. The products come from ``source.products(split)``: one ``datasets`` shard per
    data file, so ``shuffle`` reorders the files and fills a buffer of ``shuffle_buffer`` products (0: no shuffling),
    and ``split_dataset_by_node`` hands each rank whole files when their count divides by ``world_size`` (every
    ``world_size``-th product otherwise). Call ``set_epoch`` on the result to reshuffle.
    """
    if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be an integer >= 0 (0: no shuffling), got {shuffle_buffer!r}")
    if not isinstance(source, CatalogueSource):
        source = CatalogueSource(str(source))
    stream = source.products(split)
    if shuffle_buffer > 0:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    if world_size > 1:
        stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
    return stream


def choose_pair_order(
    images: Sequence[Mapping[str, Any]],
    rng: np.random.Generator,
    anchor_kind: str | None = None,
    anchor_kind_probability: float = 1.0,
) -> Iterator[tuple[int, int]]:
    """Candidate (anchor, positive) index pairs of a product's images, best first, as a lazy iterator.

    The anchor is drawn at random (among the images of kind ``anchor_kind`` first, when given and the product has
    one; for a share ``anchor_kind_probability`` of the draws, the others take any image); positives are ranked by
    preferring another source, then another kind (an instance seen by a different camera / in a different context is
    the harder, more useful positive), ties broken at random. Later candidates are the fallbacks used when an image
    turns out not to decode.

    Cost: O(n) for n images up front and O(n log n) per anchor actually reached, never the n * (n - 1) pairs. The
    random ties are the n x n uniforms ``rng.random((n, n))`` would give (anchor ``a`` uses row ``a``); each row is
    drawn from a copy of the generator moved to it, and ``rng`` leaves as if it had drawn them all, so the order and
    every later draw from ``rng`` depend only on its state, as before. ``rng`` must be a PCG64 generator
    (``np.random.default_rng``), whose stream can be moved ahead without drawing.
    """
    if not isinstance(rng.bit_generator, (np.random.PCG64, np.random.PCG64DXSM)):
        raise TypeError(f"choose_pair_order needs a PCG64 generator (np.random.default_rng), got {rng.bit_generator}")
    count = len(images)
    anchors = rng.permutation(count)
    # Only a mixed share draws a number, so the streams of recipes without one stay as they were.
    prefer = anchor_kind is not None and (anchor_kind_probability >= 1.0 or rng.random() < anchor_kind_probability)
    if prefer:  # stable sort: the random order survives within each group
        anchors = sorted(anchors, key=lambda i: images[i]["kind"] != anchor_kind)
    noise_state = rng.bit_generator.state
    _skip_doubles(rng, count * count)
    sources = _codes([image["source"] for image in images])
    kinds = _codes([image["kind"] for image in images])

    def pairs() -> Iterator[tuple[int, int]]:
        for anchor in anchors:
            others = np.delete(np.arange(count), anchor)
            noise = _doubles_at(noise_state, int(anchor) * count, count)[others]
            # lexsort: the last key is the primary one; False (another source / kind) sorts first, as before.
            order = np.lexsort((noise, kinds[others] == kinds[anchor], sources[others] == sources[anchor]))
            for positive in others[order]:
                yield int(anchor), int(positive)

    return pairs()


def _codes(values: Sequence[Any]) -> np.ndarray:
    """Equal values get equal integer codes."""
    index: dict[Any, int] = {}
    return np.array([index.setdefault(value, len(index)) for value in values], dtype=np.int64)


def _doubles_at(state: Mapping[str, Any], offset: int, count: int) -> np.ndarray:
    """``count`` uniforms of the PCG64 stream at ``state``, starting ``offset`` doubles later (one output each)."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator.advance(offset)).random(count)


def _skip_doubles(rng: np.random.Generator, count: int) -> None:
    """Move ``rng`` past ``count`` uniforms as drawing them would: ``advance`` also drops the buffered 32-bit half
    that drawing doubles keeps, so put it back (later ``integers`` draws read it)."""
    state = rng.bit_generator.state
    rng.bit_generator.advance(count)
    rng.bit_generator.state = {
        **rng.bit_generator.state,
        "has_uint32": state["has_uint32"],
        "uinteger": state["uinteger"],
    }


# Training augmentation (Sec. 4.1: "random crop and horizontal flip"), plus a mild colour jitter. The crop keeps most
# of the image: in customer and ad images the product may be small and off-centre, and a tight crop would cut it out.
AUGMENT_CROP_SCALE = (0.6, 1.0)
AUGMENT_CROP_RATIO = (3 / 4, 4 / 3)
AUGMENT_COLOUR_JITTER = 0.2


def processor_input_size(processor: Any) -> tuple[int, int] | None:
    """The processor's fixed (height, width), None when it has none."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    # transformers v5 holds it in a SizeDict (attributes); a plain dict in older processors.
    height, width = (size.get(k) if isinstance(size, Mapping) else getattr(size, k, None) for k in ("height", "width"))
    return (int(height), int(width)) if height and width else None


class CropResize(NamedTuple):
    """The processor's resize (its size and resampling filter), applied by :func:`augment_image` right after the crop
    to a crop larger than it on both sides: the processor would resize it so anyway, and the colour jitter then works
    on the pixels the model gets rather than on a large photo's."""

    height: int
    width: int
    resample: int

    @classmethod
    def of(cls, processor: Any) -> CropResize | None:
        size = processor_input_size(processor)
        resample = getattr(getattr(processor, "image_processor", None), "resample", None)
        return None if size is None or resample is None else cls(*size, int(resample))


def min_decode_size(processor: Any, augment: bool) -> int | None:
    """The shorter side an image must keep when decoded at a reduced scale (``to_rgb_image(min_size=...)``) so that the
    model never gets less resolution than from a full decode: the processor's input side, divided, with ``augment``,
    by the smallest share of a side that :func:`augment_image`'s random-resized crop keeps (area share
    ``AUGMENT_CROP_SCALE[0]`` at the most elongated aspect ``AUGMENT_CROP_RATIO``: sqrt(0.6 * 3/4) = 0.67, so 334 px
    for a 224 px model). None (decode in full) when the processor has no fixed ``height`` / ``width``.
    """
    size = processor_input_size(processor)
    if size is None:
        return None
    side = max(size)
    if augment:
        narrowest = min(AUGMENT_CROP_RATIO[0], 1 / AUGMENT_CROP_RATIO[1])
        side = side / np.sqrt(AUGMENT_CROP_SCALE[0] * narrowest)
    return int(np.ceil(side - 1e-9))


def augment_image(image: Image.Image, rng: np.random.Generator, resize: CropResize | None = None) -> Image.Image:
    """Random resized crop (area ``AUGMENT_CROP_SCALE``, aspect ``AUGMENT_CROP_RATIO``; the processor resizes it
    afterwards, or ``resize`` right away when the crop is larger than it on both sides), horizontal flip with
    probability 1/2, and brightness / contrast / saturation factors drawn from ``1 +- AUGMENT_COLOUR_JITTER``. Every
    draw comes from ``rng``, so a sample's augmentation is reproducible."""
    width, height = image.size
    area = width * height * rng.uniform(*AUGMENT_CROP_SCALE)
    aspect = float(np.exp(rng.uniform(*np.log(AUGMENT_CROP_RATIO))))
    crop_width = int(round(min(width, np.sqrt(area * aspect))))
    crop_height = int(round(min(height, np.sqrt(area / aspect))))
    left = int(rng.integers(0, width - crop_width + 1))
    top = int(rng.integers(0, height - crop_height + 1))
    image = image.crop((left, top, left + crop_width, top + crop_height))
    if resize is not None and crop_width > resize.width and crop_height > resize.height:
        image = image.resize((resize.width, resize.height), resample=resize.resample)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(1.0 + rng.uniform(-AUGMENT_COLOUR_JITTER, AUGMENT_COLOUR_JITTER))
    return image


def make_pair(
    example: Mapping[str, Any],
    seed: int,
    epoch: int,
    position: int,
    augment: bool = False,
    anchor_kind: str | None = None,
    anchor_kind_probability: float = 1.0,
    min_size: int | None = None,
    crop_resize: CropResize | None = None,
    max_file_bytes: int | None = None,
) -> dict[str, Any]:
    """Pick and decode two different images of one product row (each augmented with :func:`augment_image` when
    ``augment``). ``min_size``: JPEGs are decoded at the smallest reduced scale that keeps both sides >= it
    (``to_rgb_image``; :func:`min_decode_size` gives the one that costs the model no resolution); ``crop_resize``:
    the processor's resize, applied to large crops before the colour jitter (:func:`augment_image`);
    ``max_file_bytes``: the size cap of an image file (``to_rgb_image``; None: ``MAX_IMAGE_FILE_BYTES``).

    Returns a sample (``anchor``, ``positive`` RGB PIL images, ``title``, ``product_id`` int64, ``product_key``
    string) or, when fewer than two images decode, ``{"rejected": "single_image"}`` (``"blank_title"`` for a title with
    nothing to read, which the processor would refuse mid-run: see ``check_texts``; ``"no_product_id"`` for a missing
    or empty id); ``corrupt`` counts the images that are missing or failed to decode, ``error`` is the first one's
    message (None when none failed). The choice depends only on (seed, epoch, position), which makes resumption
    exact.
    """
    # A product id met again later in its data file (image-per-row datasets): trained on, and counted.
    noncontiguous = bool(example.get("noncontiguous"))
    if not example["product_id"]:
        return {"rejected": "no_product_id", "corrupt": 0, "noncontiguous": noncontiguous}
    title = example["title"]
    if not isinstance(title, str) or is_blank_text(title):
        return {"rejected": "blank_title", "corrupt": 0, "noncontiguous": noncontiguous}
    images = example["images"]
    rng = np.random.default_rng([seed, epoch, position])
    decoded: dict[int, Any] = {}
    bad: set[int] = set()
    errors: list[str] = []

    def load(index: int) -> Any:
        if index not in decoded and index not in bad:
            value = image_input(images[index])
            name = f"{example['product_id']} image {index}"
            try:
                if value is None:
                    raise ValueError(f"{name} has no image (an empty cell, or a relative path without a folder)")
                decoded[index] = to_rgb_image(value, name, min_size, max_file_bytes=max_file_bytes)
            except ValueError as error:
                bad.add(index)
                errors.append(str(error))
        return decoded.get(index)

    sample: dict[str, Any] = {"rejected": "single_image"}
    if len(images) >= 2:
        for anchor, positive in choose_pair_order(images, rng, anchor_kind, anchor_kind_probability):
            if anchor in bad or positive in bad:
                continue
            if load(anchor) is not None and load(positive) is not None:
                anchor_image, positive_image = decoded[anchor], decoded[positive]
                if augment:
                    anchor_image = augment_image(anchor_image, rng, crop_resize)
                    positive_image = augment_image(positive_image, rng, crop_resize)
                sample = {
                    "anchor": anchor_image,
                    "positive": positive_image,
                    "title": example["title"],
                    "product_id": product_id_to_int(example["product_id"]),
                    "product_key": example["product_id"],
                }
                break
    sample["corrupt"] = len(bad)
    sample["error"] = errors[0] if errors else None
    sample["noncontiguous"] = noncontiguous
    return sample


class PairSettings(NamedTuple):
    """How a stream picks and decodes the two images of every product (:func:`make_pair`'s arguments besides the
    product and its place in the stream)."""

    seed: int
    augment: bool
    anchor_kind: str | None
    anchor_kind_probability: float
    min_size: int | None
    crop_resize: CropResize | None
    max_file_bytes: int | None


class PairJob(NamedTuple):
    """One product to make a pair of: the example at ``position`` of ``epoch``. Crosses to a decode process."""

    example: dict[str, Any]
    epoch: int
    position: int
    settings: PairSettings

    def decode(self) -> dict[str, Any]:
        return make_pair(self.example, epoch=self.epoch, position=self.position, **self.settings._asdict())


class ProductPairCollator:
    """Turn product-pair samples into the ``EclipForPreTraining`` batch contract with an ``EclipProcessor``.

    Returns ``pixel_values`` (anchors), ``positive_pixel_values``, ``input_ids``, ``attention_mask`` (and
    ``token_type_ids`` when the tokenizer makes them) and ``product_ids`` (int64).
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        anchors = self.processor(images=[s["anchor"] for s in samples], text=[s["title"] for s in samples])
        positives = self.processor(images=[s["positive"] for s in samples])["pixel_values"]
        batch = {
            "pixel_values": anchors["pixel_values"],
            "positive_pixel_values": positives,
            "input_ids": anchors["input_ids"],
            "attention_mask": anchors["attention_mask"],
        }
        if "token_type_ids" in anchors:
            batch["token_type_ids"] = anchors["token_type_ids"]
        batch["product_ids"] = torch.tensor([s["product_id"] for s in samples], dtype=torch.int64)
        return batch


class ProductPairStream(torch.utils.data.IterableDataset):
    """Batches of product pairs from a catalogue stream, with an exactly restorable position.

    Iterating yields the batches of the current epoch from the current position; after the last batch the stream
    moves on to the next epoch. Every batch has ``batch_size`` different products (a product id already in the batch
    is held over for the next one and counted); the incomplete last batch of an epoch is dropped unless
    ``drop_last=False``. Decoding runs in ``num_workers`` processes; batching and the processor run in the iterating
    process, so the position lives there and ``state_dict()`` is exact whatever ``num_workers`` is.

    Use it directly (``for batch in stream``) or through ``torch.utils.data.DataLoader(stream, batch_size=None)``.
    Inside a DataLoader with ``num_workers=W > 0`` each loader worker reads and decodes the whole stream but runs
    the processor only for every W-th batch, so the batches come out in the same order as in direct use; the loader
    workers' positions do not reach the main process, though, so checkpoint with direct use (the stream's own
    ``num_workers`` decode pool) when exact resumption matters.

    Args:
        stream: product rows, e.g. from :func:`load_product_stream` (shuffled and split by node).
        processor: an ``EclipProcessor``.
        batch_size: products per batch.
        seed: seed of the image-pair choice (the shuffle has its own, in ``load_product_stream``).
        num_workers: decode processes (0: decode in the iterating process).
        drop_last: drop the incomplete last batch of an epoch (fixed batch sizes keep distributed gathers simple).
        augment: apply :func:`augment_image` to both images of every pair (training only).
        anchor_kind: image kind preferred as the anchor (the image paired with the title), e.g. ``"catalog"``.
        anchor_kind_probability: the share of draws that prefer ``anchor_kind`` (the others take any image).
        reduced_decoding: decode JPEGs at a reduced scale that still leaves the model its full input resolution
            (:func:`min_decode_size`), and resize crops larger than the model's input before the colour jitter
            (:class:`CropResize`); several times faster on large photos. False: always decode and jitter in full.
        unusable_products_limit: stop the first epoch with :class:`UnusableCatalogueError` (and the counts) once its
            first this many products were all unusable, rather than stream a whole unreadable catalogue (None:
            ``UNUSABLE_PRODUCTS_LIMIT``; 0: never). A shorter catalogue is judged after its pass (``last_epoch``).
        max_image_file_bytes: image files larger than this are skipped and counted as unreadable, without being read
            (None: ``processing_eclip.MAX_IMAGE_FILE_BYTES``, 50 MB).
    """

    def __init__(
        self,
        stream: datasets.IterableDataset,
        processor: Any,
        batch_size: int = DEFAULT_BATCH_SIZE,
        seed: int = 0,
        num_workers: int = DEFAULT_NUM_WORKERS,
        drop_last: bool = True,
        augment: bool = False,
        anchor_kind: str | None = None,
        anchor_kind_probability: float = 1.0,
        reduced_decoding: bool = True,
        unusable_products_limit: int | None = None,
        max_image_file_bytes: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= anchor_kind_probability <= 1.0:
            raise ValueError(f"anchor_kind_probability must be in [0, 1], got {anchor_kind_probability}")
        if batch_size < 2:
            raise ValueError("batch_size must be at least 2: the objectives need other products as negatives")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0: decode in the iterating process), got {num_workers}")
        limit = UNUSABLE_PRODUCTS_LIMIT if unusable_products_limit is None else unusable_products_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"unusable_products_limit must be an integer >= 0 (0: never stop early), got {limit!r}")
        self.unusable_products_limit = limit
        self.stream = stream
        self.collator = ProductPairCollator(processor)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.settings = PairSettings(
            seed=seed,
            augment=augment,
            anchor_kind=anchor_kind,
            anchor_kind_probability=anchor_kind_probability,
            min_size=min_decode_size(processor, augment) if reduced_decoding else None,
            crop_resize=CropResize.of(processor) if reduced_decoding else None,
            max_file_bytes=max_image_file_bytes,
        )
        self.epoch = 0
        self._consumed = 0  # examples of this epoch taken by the batcher (in a batch, held over or rejected)
        self._pending: list[int] = []  # positions of held-over examples, oldest first
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        # What the last epoch iterated to its end gave (see `_iterate`); None before the first.
        self.last_epoch: dict[str, Any] | None = None

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def min_size(self) -> int | None:
        return self.settings.min_size

    @property
    def crop_resize(self) -> CropResize | None:
        return self.settings.crop_resize

    # ------------------------------------------------------------------------------------------------ state
    @property
    def counters(self) -> dict[str, int]:
        """Skip / deferral counts so far: ``skipped_corrupt_images``, ``skipped_single_image_products``,
        ``deferred_duplicates`` (restored with the state)."""
        return dict(self._counters)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning; the shuffle order depends only on (shuffle seed, epoch)."""
        self.epoch = epoch
        self._consumed = 0
        self._pending = []

    def state_dict(self) -> dict[str, Any]:
        """Position after the last batch yielded: epoch, examples consumed, held-over positions, counters."""
        return {
            "epoch": self.epoch,
            "consumed": self._consumed,
            "pending": list(self._pending),
            "counters": dict(self._counters),
            "seed": self.seed,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at the position saved by :meth:`state_dict` (with the same stream, seed and batch size)."""
        if state["seed"] != self.seed or state["batch_size"] != self.batch_size:
            raise ValueError("the state was saved with another seed or batch size; the batches would differ")
        self.epoch = int(state["epoch"])
        self._consumed = int(state["consumed"])
        self._pending = [int(position) for position in state["pending"]]
        self._counters = {name: int(state["counters"].get(name, 0)) for name in COUNTER_NAMES}

    # ------------------------------------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            yield from self._iterate(self.num_workers, owned=None)
        else:
            # Inside a DataLoader worker: a private copy of the stream; run the processor for every W-th batch only.
            yield from self._iterate(0, owned=(worker.id, worker.num_workers))

    def _iterate(self, workers: int, owned: tuple[int, int] | None) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of the current epoch from the current position (of those ``owned``, (loader worker, loader
        workers), only every workers-th), then on to the next epoch."""
        epoch, start, replay = self.epoch, self._consumed, set(self._pending)
        tally = EpochTally(epoch, from_start=start == 0 and not replay, counters_at_start=dict(self._counters))
        batcher = DistinctBatcher(self.batch_size)
        samples = decode_in_order(self._jobs(epoch, start, replay), workers)
        for batch in self._full_batches(samples, replay, batcher, tally):
            if _is_owned(owned, tally.batches):
                yield self.collator(batch)
            tally.batches += 1
        leftover = [] if self.drop_last else batcher.distinct_leftover()
        if len(leftover) >= 2:
            if _is_owned(owned, tally.batches):
                yield self.collator(leftover)
            tally.batches += 1
        # The training loop stops on an epoch that started at its beginning and gave no batch (it would loop forever).
        self.last_epoch = tally.summary(self._counters)
        self.set_epoch(epoch + 1)

    def _jobs(self, epoch: int, start: int, replay: set[int]) -> Iterator[PairJob]:
        """A job for each example of ``epoch`` at a position >= ``start`` or in ``replay`` (held-over examples of a
        restored state); the examples before are read but not decoded."""
        self.stream.set_epoch(epoch)
        position = 0
        # ``iter`` rather than ``__iter__``: inside a DataLoader worker ``__iter__`` would hand this worker only some
        # of the parquet files, whereas every loader worker must see the whole stream (see the class docstring).
        for rows in self.stream.iter(batch_size=_READ_BATCH):
            for product_id, title, images, noncontiguous in zip(
                rows["product_id"], rows["title"], rows["images"], rows["noncontiguous"]
            ):
                if position >= start or position in replay:
                    # Only what make_pair needs crosses the process boundary (boxes stay behind).
                    example = {
                        "product_id": product_id,
                        "title": title,
                        "images": [{k: im[k] for k in ("image", "path", "source", "kind")} for im in images],
                        "noncontiguous": noncontiguous,
                    }
                    yield PairJob(example, epoch, position, self.settings)
                position += 1

    def _full_batches(
        self, samples: Iterator[tuple[int, dict]], replay: set[int], batcher: DistinctBatcher, tally: EpochTally
    ) -> Iterator[list[dict]]:
        """The full batches of the epoch's samples, keeping the position (``_consumed``, ``_pending``) and the
        counters up to date before each is handed on. The held-over examples of a restored state (``replay``) start
        the batch that follows, exactly as the uninterrupted run held them over after its last batch."""
        restored: list[tuple[int, dict]] = []
        for position, sample in samples:
            if position in replay:  # a held-over example of the restored state: already counted when deferred
                restored.append((position, sample))
                continue
            if restored:
                batcher.hold_over(restored)
                restored = []
            tally.take(sample)
            self._take(position, sample, batcher)
            tally.check_usable(self._counters, self.unusable_products_limit)
            if batcher.is_full():
                batch = batcher.start_next_batch()
                self._pending = batcher.pending_positions()
                yield batch
        if restored:  # the restored position was at the very end of the epoch
            batcher.hold_over(restored)

    def _take(self, position: int, sample: dict, batcher: DistinctBatcher) -> None:
        """Counts the sample's skipped images and its rejection or deferral, and batches it when it is usable."""
        counters = self._counters
        counters["skipped_corrupt_images"] += sample["corrupt"]
        counters["noncontiguous_products"] += sample["noncontiguous"]
        if "rejected" in sample:
            counters[REJECTION_COUNTERS[sample["rejected"]]] += 1
        elif not batcher.add(position, sample):
            counters["deferred_duplicates"] += 1
        self._consumed = position + 1


def _is_owned(owned: tuple[int, int] | None, batch_index: int) -> bool:
    """Whether this process runs the processor for batch ``batch_index``: (loader worker, loader workers) owns every
    workers-th batch; None (direct use) owns them all."""
    return owned is None or batch_index % owned[1] == owned[0]
