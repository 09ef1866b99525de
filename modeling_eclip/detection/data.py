# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Detection data from a product catalogue (Sec. 4.2.5): every boxed image (customer and ad photos) with all its boxes,
each labelled with its product's category, in DETR's label format.

Reading a split skips (and counts, by reason, naming the first few in the log) an image that cannot be a target, as the
pretraining stream skips and counts the images it cannot read: one that does not decode (truncated, not an image, a
decompression bomb), a box count that differs from its product-id count, no boxes, a box outside the image or with no
area, or a box of a product the catalogue does not list, has no category (pretraining's evaluation leaves such
products out too) or has a category outside the labels (one the checkpoint was not trained on). Images are decoded by
the package's one decoder (`processing_eclip.to_rgb_image`: EXIF orientation, transparency on white), and boxes are
on the upright image, as evaluation reads them. `detection_target`, which every batch goes through, raises on the same
box problems, so data from elsewhere fails loudly instead of giving the loss a NaN.
`check_detection_labels` is the check of DETR-format labels (the model's `forward` checks only their shapes): the
collator runs it on every batch, and labels built elsewhere should go through it too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers.image_transforms import corners_to_center_format

from ..data.source import CatalogueSource, image_input
from ..modeling_eclip import _check_detection_label_shapes
from ..processing_eclip import is_blank_text, to_rgb_image

logger = logging.getLogger(__name__)

# Image kinds with several products and their boxes: the detection images of the demo catalogue.
DETECTION_KINDS = ("customer", "ad")
SKIP_REASONS = (
    "unreadable_image",
    "box_id_mismatch",
    "no_boxes",
    "box_outside_image",
    "degenerate_box",
    "unknown_product",
    "no_category",
    "unknown_category",
)
# Skipped images named in the log per split read (the rest only counted), as evaluation names its unreadable images.
NAMED_SKIPS = 5


class BoxError(ValueError):
    """An image that cannot be a detection target (its boxes, their products, or the image itself); `reason` is one of
    `SKIP_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class DetectionSample:
    """One image with its objects: `image` its encoded bytes (or path), `width` and `height` those of the decoded,
    upright image, `boxes` as pixel (x0, y0, x1, y1) on it, x1/y1 exclusive edges as in the shard format; `name` is
    `<product id> image <index>`, for messages."""

    image_id: int
    image: bytes | str
    width: int
    height: int
    boxes: list[list[float]]
    labels: list[int]
    product_id: str
    kind: str
    name: str = "image"


def has_category(category: Any) -> bool:
    """A category a box can be labelled with: a string with something to read (not None, not blank)."""
    return isinstance(category, str) and not is_blank_text(category)


def category_labels(data_dir: str | os.PathLike) -> list[str]:
    """The label names: every category of the catalogue (all splits), sorted, so train and test share the ids.
    Products without a category (None or blank) give no label; their boxes are skipped with the images."""
    values = CatalogueSource(str(data_dir)).product_values("category").values()
    if not values:
        raise FileNotFoundError(f"{data_dir} holds no products; is this a catalogue?")
    categories = {category for category in values if has_category(category)}
    if not categories:
        raise ValueError(f"no product of {data_dir} has a category; detection labels each box with its product's")
    return sorted(categories)


def detection_target(
    boxes: Sequence[Sequence[float]], labels: Sequence[int], width: int, height: int, num_labels: int
) -> dict[str, torch.Tensor]:
    """DETR's target of one image: `class_labels` and `boxes` as (center_x, center_y, width, height) normalised by the
    image size. Raises `BoxError` naming the box for an empty list, a box outside the image or with no area, and
    `ValueError` for a label outside [0, num_labels)."""
    if len(boxes) == 0:
        raise BoxError("no_boxes", "the image has no boxes; a detection target needs at least one object")
    if len(boxes) != len(labels):
        raise BoxError("box_id_mismatch", f"{len(boxes)} boxes but {len(labels)} labels; one label per box is needed")
    for box in boxes:
        try:
            x0, y0, x1, y1 = (float(value) for value in box)
        except (TypeError, ValueError):  # not 4 values, or one that is no number (None, say)
            raise BoxError("degenerate_box", f"box {box!r} is not [x0, y0, x1, y1]") from None
        if not (x0 < x1 and y0 < y1):
            raise BoxError("degenerate_box", f"box {list(box)} has no area (needs x0 < x1 and y0 < y1)")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise BoxError("box_outside_image", f"box {list(box)} reaches outside the {width}x{height} image")
    for label in labels:
        if isinstance(label, bool) or int(label) != label or not 0 <= label < num_labels:
            raise ValueError(f"label {label!r} is not an integer in [0, num_labels={num_labels})")
    corners = torch.tensor(boxes, dtype=torch.float32) / torch.tensor([width, height, width, height])
    return {"class_labels": torch.tensor(labels, dtype=torch.long), "boxes": corners_to_center_format(corners)}


def check_detection_labels(labels: Sequence[dict[str, torch.Tensor]], num_labels: int) -> None:
    """Raises a `ValueError` naming the image and the problem for DETR-format labels (`class_labels`, boxes as
    normalised (center_x, center_y, width, height)) that the DETR loss would turn into NaN or a wrong target without a
    word: unknown classes, non-finite boxes, no width or height, boxes outside [0, 1]. The shapes are checked first,
    by the rule `EclipForObjectDetection.forward` applies. Run on the host, once per batch, where the batch is made:
    reading the values inside `forward` would make every step wait for the device."""
    _check_detection_label_shapes(list(labels), len(labels))
    for index, target in enumerate(labels):
        where = f"labels[{index}]"
        classes, boxes = target["class_labels"], target["boxes"]
        if classes.numel() and (classes.min() < 0 or classes.max() >= num_labels):
            raise ValueError(
                f"{where}: class_labels must be integers in [0, num_labels={num_labels}), got {classes.tolist()}"
            )
        if not torch.isfinite(boxes).all():
            raise ValueError(f"{where}: boxes hold non-finite values: {boxes.tolist()}")
        if boxes.numel() == 0:
            continue
        center, size = boxes[:, :2], boxes[:, 2:]
        if (size <= 0).any():
            raise ValueError(f"{where}: degenerate boxes (width or height <= 0): {boxes.tolist()}")
        tolerance = 1e-4  # rounding of pixel boxes normalised by the image size
        if ((center - size / 2) < -tolerance).any() or ((center + size / 2) > 1 + tolerance).any():
            raise ValueError(
                f"{where}: boxes reach outside the image; they must be (center_x, center_y, width, height) "
                f"normalised to [0, 1] by the image size, got {boxes.tolist()}"
            )


def load_detection_samples(
    data_dir: str | os.PathLike, split: str, label_names: Sequence[str], kinds: Sequence[str] = DETECTION_KINDS
) -> tuple[list[DetectionSample], Counter]:
    """The boxed images of one split's products (of the given kinds) and the counts of skipped images by reason
    (`SKIP_REASONS`); the first few skipped are named in a warning.

    A box's label is its product's category; products are looked up in every split of the catalogue (a distractor
    may be a product of the other split). Every image kept is decoded once here, as training decodes it, so one that
    cannot be read is skipped now rather than stopping a run later."""
    source = CatalogueSource(str(data_dir))
    rows = source.iter_products(split, need_category=True)  # FileNotFoundError naming a missing split
    category_of = source.product_values("category")
    label_of = {name: index for index, name in enumerate(label_names)}
    samples: list[DetectionSample] = []
    skipped: Counter = Counter()
    named: list[str] = []
    for row in rows:
        for index, image in enumerate(row["images"]):
            if image["kind"] not in kinds:
                continue
            name = f"{row['product_id']} image {index}"
            try:
                labels = _box_labels(image["boxes"], image["box_product_ids"], category_of, label_of)
                sample = _decoded_sample(image, name, labels, len(label_names))
            except BoxError as error:
                skipped[error.reason] += 1
                if len(named) < NAMED_SKIPS:
                    named.append(f"{name}: {error}")
                continue
            samples.append(
                DetectionSample(image_id=len(samples), product_id=row["product_id"], kind=image["kind"], **sample)
            )
    if skipped:
        shown = "; ".join(named) + ("; ..." if skipped.total() > len(named) else "")
        logger.warning(
            "split %r of %s: skipped %d of %d boxed images (%s): %s",
            split,
            data_dir,
            skipped.total(),
            skipped.total() + len(samples),
            describe_skips(skipped),
            shown,
        )
    return samples, skipped


def describe_skips(skipped: Counter) -> str:
    """`reason count, ...` of skipped images, for messages."""
    return ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()))


def _box_labels(
    boxes: Sequence[Any], box_product_ids: Sequence[Any], category_of: Mapping[str, Any], label_of: Mapping[str, int]
) -> list[int]:
    """The label of each box: its product's category. Raises `BoxError` for a box count that differs from the
    product-id count, a product the catalogue does not list, one without a category, or a category not in the labels."""
    if len(boxes) != len(box_product_ids):
        raise BoxError(
            "box_id_mismatch",
            f"{len(boxes)} boxes but {len(box_product_ids)} box_product_ids; each box needs its product's id",
        )
    unknown = [p for p in box_product_ids if p not in category_of]
    if unknown:
        raise BoxError("unknown_product", f"boxes of products the catalogue does not list: {unknown}")
    uncategorised = [p for p in box_product_ids if not has_category(category_of[p])]
    if uncategorised:
        raise BoxError("no_category", f"boxes of products without a category: {uncategorised}")
    unseen = sorted({category_of[p] for p in box_product_ids} - set(label_of))
    if unseen:
        raise BoxError("unknown_category", f"categories not among the {len(label_of)} labels: {unseen}")
    return [label_of[category_of[p]] for p in box_product_ids]


def _decoded_sample(image: Mapping[str, Any], name: str, labels: list[int], num_labels: int) -> dict[str, Any]:
    """The fields of a `DetectionSample` read from one image: decoded by the package's decoder (`BoxError`
    `unreadable_image` when it cannot be), its boxes checked as targets on the upright image."""
    data = image_input(image)
    if data is None:
        raise BoxError("unreadable_image", "no image bytes or path")
    try:
        width, height = to_rgb_image(data, name).size
    except ValueError as error:  # the decoder's message names the image again; its cause says what is wrong
        raise BoxError("unreadable_image", f"cannot decode it: {error.__cause__ or error}") from None
    detection_target(image["boxes"], labels, width, height, num_labels)
    boxes = [[float(value) for value in box] for box in image["boxes"]]
    return {"image": data, "width": width, "height": height, "boxes": boxes, "labels": labels, "name": name}


def require_samples(
    samples: Sequence[DetectionSample], skipped: Counter, split: str, data_dir: str | os.PathLike, remedy: str
) -> None:
    """Raises a `ValueError` naming the split, what was skipped and `remedy` when a split gave no usable image."""
    if not samples:
        reasons = describe_skips(skipped) or "it has no boxed image of the kinds read"
        raise ValueError(f"split {split!r} of {data_dir} has no usable boxed image (skipped: {reasons}); {remedy}")


def sample_image(sample: DetectionSample) -> Image.Image:
    """The sample's image decoded as training decodes it (`processing_eclip.to_rgb_image`)."""
    return to_rgb_image(sample.image, sample.name)


def collate(samples: Sequence[DetectionSample], image_processor: Any, num_labels: int) -> dict[str, Any]:
    """`pixel_values` and DETR `labels` for a list of samples, the labels checked (`check_detection_labels`)."""
    pixel_values = image_processor(images=[sample_image(s) for s in samples], return_tensors="pt")["pixel_values"]
    labels = [detection_target(s.boxes, s.labels, s.width, s.height, num_labels) for s in samples]
    check_detection_labels(labels, num_labels)
    return {"pixel_values": pixel_values, "labels": labels}


class DetectionBatches:
    """Endless shuffled batches of detection samples for one process, with an exactly restorable position
    (`state_dict` / `load_state_dict`, saved with every checkpoint). Every epoch is a new permutation of the seed;
    process `rank` of `world_size` takes every `world_size`-th sample of it."""

    def __init__(
        self,
        samples: Sequence[DetectionSample],
        image_processor: Any,
        num_labels: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(samples) < batch_size * world_size:
            raise ValueError(
                f"{len(samples)} training images cannot fill one global batch of {batch_size * world_size} "
                f"({batch_size} per process x {world_size} process(es)): lower the batch size or add images"
            )
        self.samples = samples
        self.image_processor = image_processor
        self.num_labels = num_labels
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0  # batches taken from this epoch
        self._fingerprint: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_samples": len(self.samples),
            "samples": self.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"the checkpoint's data order has seed {state['seed']}, this run {self.seed}")
        # A position in another list of images (one became unreadable, the catalogue changed) would silently give
        # other batches. Checkpoints written before the fingerprint existed lack the keys and are taken as they are.
        if state.get("samples", self.fingerprint()) != self.fingerprint():
            raise ValueError(
                f"the checkpoint's data position is in other training images ({state['num_samples']} images, "
                f"{len(self.samples)} now): restore the catalogue it was trained on, or start a new run"
            )
        self.epoch, self.position = state["epoch"], state["position"]

    def fingerprint(self) -> str:
        """SHA-256 of the samples' names, boxes and labels, in order: what the data order is a permutation of."""
        if self._fingerprint is None:  # once: the samples do not change, and every checkpoint asks
            digest = hashlib.sha256()
            for sample in self.samples:
                digest.update(repr((sample.name, sample.boxes, sample.labels)).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _epoch_indices(self) -> list[int]:
        order = list(range(len(self.samples)))
        random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        # Every process gets as many samples, so all take the same number of steps per epoch.
        usable = len(order) - len(order) % self.world_size
        return order[:usable][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            indices = self._epoch_indices()
            batches_per_epoch = len(indices) // self.batch_size  # the last partial batch waits for the next epoch
            while self.position < batches_per_epoch:
                start = self.position * self.batch_size
                self.position += 1
                chunk = [self.samples[i] for i in indices[start : start + self.batch_size]]
                yield collate(chunk, self.image_processor, self.num_labels)
            self.epoch, self.position = self.epoch + 1, 0
