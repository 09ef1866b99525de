# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The data of the image-tower pretraining (`image_tower.py`), checked whole before any training: a train and a
validation split with an `image` Image and a `label` ClassLabel column, labels scored by class name, images that
decode.

- Classes are the train split's. Validation labels are mapped to them by name, so a validation split that lists the
  classes in another order scores the same; a validation class the train split does not have is refused, named.
- `datasets.load_dataset` reads every parquet (or arrow) file with the class names of the first one it reads (or of
  the dataset card): a file written with another order would have its labels read as other classes. The names each
  file stores are read back, and a split's labels are taken with its own files' names; a split whose files disagree
  is refused, the files named.
- A label of -1 (`datasets`' value for "no label") is skipped and counted per split; any other label outside the
  split's classes is refused, naming the split, the count and an example (the labels and names do not fit together).
- Images that do not decode are skipped and counted per split (`drop_unreadable_images`).
- A split left without an image is refused, naming it and the counts: nothing that can fail after training
  (evaluation, the scores) is left to fail there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..data.source import data_file_folder, resolve_image_path
from ..processing_eclip import to_rgb_image

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation")
NO_LABEL = -1  # datasets' ClassLabel value of an example without a label


@dataclass
class TowerData:
    """The splits to train and score on, with what was skipped on the way."""

    data: Any  # DatasetDict of SPLITS: `image` undecoded, rows without a label or a readable image left out
    names: list[str]  # the classes: the train split's class names
    label_maps: dict[str, list[int]]  # per split: its label id -> the id of the same class name in `names`
    unlabelled: dict[str, int]  # per split: rows skipped with label -1
    unreadable: dict[str, int]  # per split: rows skipped whose image does not decode
    image_folders: dict[str, str | None]  # per split: what a relative image path is read against (`image_source`)


def load_tower_data(dataset: str) -> TowerData:
    """`dataset` (a local folder or Hub id) loaded and checked as the module docstring says; `ValueError` naming the
    dataset, split, file or classes otherwise."""
    import datasets

    data = datasets.load_dataset(dataset)
    missing = [split for split in SPLITS if split not in data]
    if missing:
        raise ValueError(f"dataset {dataset} has no {missing} split(s); it has {sorted(data)}")
    data = datasets.DatasetDict({split: data[split] for split in SPLITS})
    for split in SPLITS:
        for column, kind in (("image", datasets.Image), ("label", datasets.ClassLabel)):
            if not isinstance(data[split].features.get(column), kind):
                raise ValueError(f"dataset {dataset} needs a {kind.__name__} column {column!r} in split {split}")
    data_files = _data_files(dataset)
    split_names = stored_label_names(dataset, data, data_files)
    image_folders = {split: _common_folder(data_files.get(split, [])) for split in SPLITS}
    unlabelled = {}
    for split in SPLITS:
        data[split], unlabelled[split] = drop_unlabelled(data[split], split_names[split], f"{dataset} split {split}")
    names = split_names["train"]
    label_maps = {split: label_map(split_names[split], names, f"{dataset} split {split}") for split in SPLITS}
    data, unreadable = drop_unreadable_images(data, image_folders)
    for split in SPLITS:
        if len(data[split]) == 0:
            raise ValueError(
                f"dataset {dataset} split {split} has no image to {'train' if split == 'train' else 'score'} on: "
                f"{unreadable[split]} image(s) do not decode, {unlabelled[split]} example(s) have no label (-1). "
                "Replace the images, label the examples, or add examples to the split"
            )
    return TowerData(data, names, label_maps, unlabelled, unreadable, image_folders)


def _data_files(dataset: str) -> dict[str, list[str]]:
    """Each split's data files as `datasets` resolves them ({} when it cannot list them, e.g. offline)."""
    import datasets

    try:
        data_files = datasets.load_dataset_builder(dataset).config.data_files or {}
    except Exception as error:  # a dataset `load_dataset` read; only what its files hold is not known then
        logger.warning("image tower: cannot list the files of %s (%s); using what it loads with", dataset, error)
        return {}
    return {split: [str(file) for file in files] for split, files in data_files.items()}


def _common_folder(files: list[str]) -> str | None:
    """The one folder a split's data files sit in (a relative image path in them is read from there), else None:
    rows do not carry their file once loaded, so a split spread over folders reads only absolute paths and bytes."""
    folders = {data_file_folder(file) for file in files}
    return folders.pop() if len(folders) == 1 else None


def stored_label_names(dataset: str, data: Any, data_files: dict[str, list[str]]) -> dict[str, list[str]]:
    """The class names of each split's labels: those its own parquet or arrow files store (`datasets` reads every
    file with one file's names), else those `datasets` reports."""
    found = {split: data[split].features["label"].names for split in SPLITS}
    for split in SPLITS:
        per_file = {}
        for file in data_files.get(split, []):
            names = _file_label_names(str(file))
            if names is not None:
                per_file[str(file)] = names
        if len({tuple(names) for names in per_file.values()}) > 1:
            listed = "; ".join(f"{file}: {names}" for file, names in per_file.items())
            raise ValueError(
                f"dataset {dataset} split {split}: its files list the classes in different orders ({listed}); "
                "datasets reads them all with one order, so labels would be read as other classes. Write the split "
                "with one ClassLabel (e.g. cast_column('label', ClassLabel(names=...)) before saving)"
            )
        if per_file:
            found[split] = next(iter(per_file.values()))
    return found


def _file_label_names(file: str) -> list[str] | None:
    """The `label` class names a parquet or arrow file stores in its `huggingface` schema metadata, or None (another
    kind of file, no such metadata, or a file that cannot be opened here)."""
    import datasets
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not file.endswith((".parquet", ".arrow")):
        return None
    try:
        with fsspec.open(file, "rb") as handle:
            schema = pq.read_schema(handle) if file.endswith(".parquet") else pa.ipc.open_stream(handle).schema
    except Exception as error:  # offline, or not a readable file: datasets' reading applies, with a warning
        logger.warning("image tower: cannot read the class names stored in %s (%s)", file, error)
        return None
    if not schema.metadata or b"huggingface" not in schema.metadata:
        return None
    label = datasets.Features.from_arrow_schema(schema).get("label")
    return list(label.names) if isinstance(label, datasets.ClassLabel) else None


def drop_unlabelled(split: Any, names: list[str], where: str) -> tuple[Any, int]:
    """`split` without its rows of label -1, and how many there were; `ValueError` for labels outside `names`."""
    labels = list(split["label"])
    outside = [label for label in labels if label != NO_LABEL and not 0 <= label < len(names)]
    if outside:
        raise ValueError(
            f"{where}: {len(outside)} label(s) are outside its {len(names)} classes (e.g. {outside[0]}); the labels "
            "and class names do not fit together. Fix the labels, or mark examples without a class with -1"
        )
    unlabelled = labels.count(NO_LABEL)
    if unlabelled:
        logger.warning("image tower: skipped %d example(s) without a label (-1) of %s", unlabelled, where)
        split = split.select([i for i, label in enumerate(labels) if label != NO_LABEL])
    return split, unlabelled


def label_map(names: list[str], classes: list[str], where: str) -> list[int]:
    """For each of `names` (a split's classes), the index of the same name in `classes`; `ValueError` naming the
    classes `classes` does not have."""
    unknown = [name for name in names if name not in classes]
    if unknown:
        raise ValueError(
            f"{where} has classes the train split does not: {unknown}; the tower only learns the train split's "
            "classes, so those examples could never be scored right. Remove them, or add the classes to train"
        )
    return [classes.index(name) for name in names]


def drop_unreadable_images(data: Any, image_folders: dict[str, str | None] | None = None) -> tuple[Any, dict[str, int]]:
    """The dataset with its `image` column left undecoded (`to_rgb_image` decodes it in the transform, as the
    pretraining stream does: EXIF orientation, transparency on white) and without the rows whose image does not
    decode; returns the count dropped per split (logged, and kept in tower_info.json)."""
    import datasets

    def readable(example: dict[str, Any], folder: str | None) -> bool:
        try:
            to_rgb_image(image_source(example["image"], folder))
        except ValueError:
            return False
        return True

    data = data.cast_column("image", datasets.Image(decode=False))
    unreadable = {}
    for split in list(data):
        before = len(data[split])
        folder = (image_folders or {}).get(split)
        data[split] = data[split].filter(readable, fn_kwargs={"folder": folder})
        unreadable[split] = before - len(data[split])
        if unreadable[split]:
            logger.warning("image tower: skipped %d unreadable image(s) of split %s", unreadable[split], split)
    return data, unreadable


def image_source(image: Mapping[str, Any], folder: str | None) -> Any:
    """What `to_rgb_image` decodes for an undecoded `datasets.Image` value: its bytes, else its path read as every
    dataset path is (`resolve_image_path`: relative to `folder`, the split's data-file folder, never the working
    directory)."""
    return image["bytes"] if image.get("bytes") is not None else resolve_image_path(image["path"], folder)
