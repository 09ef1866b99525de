# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Convert a product-image catalogue (JSONL, CSV or a saved ``datasets`` dataset) into ECLIP shards.

Input: one row per product image with ``product_id``, ``title``, optional ``category``, ``image`` (a path relative to
the catalogue file's folder or absolute; in a saved dataset also an ``Image`` feature), optional ``source`` and
optional ``kind`` (``catalog`` / ``customer`` / ``ad``). Output: the shard format of
``modeling_eclip/data/shard_format.py``, one row per product, written atomically by its ``ShardWriter``.

Nothing is dropped silently: every rejected row is counted by reason (printed, and saved as ``rejections.json``)::

    .venv/bin/python processing/catalogue_to_shards.py catalogue.jsonl --output data/shop --image-size 128

Rows are grouped by product in memory (only the re-encoded images are kept, so pre-resizing keeps this small).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile
from tqdm.auto import tqdm

from modeling_eclip.data.shard_format import IMAGE_KINDS, SPLITS, ShardWriter
from modeling_eclip.processing_eclip import to_rgb_image

REJECTION_REASONS = (
    "no_title",
    "missing_image_file",
    "duplicate",
    "unreadable_image",
    "invalid_kind",
    "single_image_product",
)
DEFAULT_SOURCE = "catalogue"
DEFAULT_KIND = "catalog"
DEFAULT_CATEGORY = "uncategorized"
JPEG_QUALITY = 90
# The ViT image processor's default resample: pre-resizing with it gives the pixels the model would have seen.
RESAMPLE = Image.Resampling.BILINEAR


def read_catalogue(path: str | os.PathLike) -> tuple[Iterator[dict[str, Any]], Path]:
    """Rows of a ``.jsonl`` / ``.csv`` file or a ``save_to_disk`` folder, and the folder relative paths start from."""
    path = Path(path)
    if path.is_dir():
        import datasets

        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            raise ValueError(f"{path} holds a DatasetDict; pass the folder of one split")
        if isinstance(dataset.features.get("image"), datasets.Image):
            # Raw bytes/path rather than decoded PIL images: decoding is done (and failures counted) here.
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        return iter(dataset), path
    if path.suffix == ".jsonl":

        def jsonl() -> Iterator[dict[str, Any]]:
            with open(path, encoding="utf-8") as file:
                for line in file:
                    if line.strip():
                        yield json.loads(line)

        return jsonl(), path.parent
    if path.suffix == ".csv":

        def rows() -> Iterator[dict[str, Any]]:
            with open(path, encoding="utf-8", newline="") as file:
                yield from csv.DictReader(file)

        return rows(), path.parent
    raise ValueError(f"{path}: expected a .jsonl or .csv file or a datasets folder saved with save_to_disk")


def _image_input(value: Any, root: Path) -> tuple[Any, str | None]:
    """(what to decode, identity for duplicate detection) or (None, reason) when the file is missing."""
    if isinstance(value, dict):  # a datasets Image feature with decode=False
        if value.get("bytes"):
            return value["bytes"], None
        value = value.get("path")
    if isinstance(value, Image.Image):
        return value, None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if not value:
        return None, "missing_image_file"
    file = Path(value) if Path(value).is_absolute() else root / value
    if not file.is_file():
        return None, "missing_image_file"
    return file.read_bytes(), None


def encode_image(image: Image.Image, image_size: int | None, image_format: str) -> tuple[bytes, int, int]:
    """Optionally resize an RGB image to ``image_size`` squared and encode it; returns (bytes, width, height)."""
    if image_size:
        image = image.resize((image_size, image_size), RESAMPLE)
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), image.width, image.height


def assign_splits(product_ids: Sequence[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Product id -> ``train`` / ``test``: a seeded permutation of the sorted ids puts the first fraction in test."""
    ordered = sorted(product_ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    num_test = round(test_fraction * len(ordered))
    return {ordered[i]: ("test" if rank < num_test else "train") for rank, i in enumerate(order)}


def convert(
    catalogue: str | os.PathLike,
    output: str | os.PathLike,
    split: str = "train",
    test_fraction: float | None = None,
    seed: int = 0,
    image_size: int | None = None,
    image_format: str = "auto",
) -> dict[str, Any]:
    """Convert ``catalogue`` into shards under ``output``; returns the report (also saved as ``rejections.json``).

    ``image_format``: ``png``, ``jpeg`` or ``auto`` (PNG sources stay PNG, everything else becomes JPEG q90).
    """
    # A truncated file must count as unreadable, never be padded with grey: make sure nobody turned that on.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    rows, root = read_catalogue(catalogue)
    rejected: Counter[str] = Counter({reason: 0 for reason in REJECTION_REASONS})
    products: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    num_rows = 0
    for row in tqdm(rows, desc="reading the catalogue", unit=" rows", dynamic_ncols=True):
        num_rows += 1
        product_id = str(row.get("product_id") or "").strip()
        title = str(row.get("title") or "").strip()
        if not title or not product_id:
            rejected["no_title"] += 1
            continue
        kind = str(row.get("kind") or DEFAULT_KIND).strip()
        if kind not in IMAGE_KINDS:
            rejected["invalid_kind"] += 1
            continue
        data, reason = _image_input(row.get("image"), root)
        if reason:
            rejected[reason] += 1
            continue
        identity = hashlib.blake2b(data if isinstance(data, bytes) else data.tobytes(), digest_size=16).hexdigest()
        if (product_id, identity) in seen:
            rejected["duplicate"] += 1
            continue
        seen.add((product_id, identity))
        try:
            image = to_rgb_image(data, f"row {num_rows} ({product_id})")
        except ValueError:
            rejected["unreadable_image"] += 1
            continue
        fmt = image_format
        if fmt == "auto":
            fmt = "png" if isinstance(data, bytes) and data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
        encoded, width, height = encode_image(image, image_size, fmt)
        product = products.setdefault(
            product_id,
            {
                "product_id": product_id,
                "title": title,
                "category": str(row.get("category") or "").strip(),
                "images": [],
            },
        )
        product["category"] = product["category"] or DEFAULT_CATEGORY
        product["images"].append(
            {
                "image": encoded,
                "source": str(row.get("source") or DEFAULT_SOURCE).strip(),
                "kind": kind,
                # The format needs the product's own box first; without annotations that is the whole image.
                "boxes": [[0.0, 0.0, float(width), float(height)]],
                "box_product_ids": [product_id],
            }
        )
    kept = {pid: product for pid, product in products.items() if len(product["images"]) >= 2}
    # A product needs two images to form a positive pair; its lone row is rejected (after the other reasons).
    rejected["single_image_product"] += sum(len(p["images"]) for pid, p in products.items() if pid not in kept)
    if test_fraction is not None:
        splits = assign_splits(list(kept), test_fraction, seed)
    else:
        splits = dict.fromkeys(kept, split)
    output = Path(output)
    counts = {}
    for name in sorted(set(splits.values())):
        with ShardWriter(output / name) as writer:
            for pid in sorted(kept):  # sorted: the same catalogue always gives the same shards
                if splits[pid] == name:
                    writer.write({**kept[pid], "split": name})
        counts[name] = {"products": writer.num_rows, "shards": len(writer.paths)}
    report = {
        "input_rows": num_rows,
        "accepted_rows": num_rows - sum(rejected.values()),
        "rejected_rows": dict(rejected),
        "splits": counts,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "rejections.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a markdown table."""
    lines = ["| rows | count |", "| --- | ---: |", f"| input | {report['input_rows']} |"]
    lines += [f"| rejected: {reason} | {count} |" for reason, count in report["rejected_rows"].items()]
    lines.append(f"| accepted | {report['accepted_rows']} |")
    lines += [
        f"| {name}: products (shards) | {c['products']} ({c['shards']}) |" for name, c in report["splits"].items()
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("catalogue", help="a .jsonl or .csv catalogue, or a datasets folder saved with save_to_disk")
    parser.add_argument("--output", required=True, help="output catalogue root (<output>/<split>/shard-*.parquet)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--split", default="train", choices=SPLITS, help="split of every product (default train)")
    group.add_argument("--test-fraction", type=float, help="put this fraction of the products in test, by product")
    parser.add_argument("--seed", type=int, default=0, help="seed of --test-fraction (default 0)")
    parser.add_argument("--image-size", type=int, help="resize every image to NxN (as the processor would)")
    parser.add_argument(
        "--image-format", default="auto", choices=("auto", "png", "jpeg"), help="stored encoding (auto: keep PNG)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the conversion and print the report."""
    args = parse_args(argv)
    report = convert(
        args.catalogue,
        args.output,
        split=args.split,
        test_fraction=args.test_fraction,
        seed=args.seed,
        image_size=args.image_size,
        image_format=args.image_format,
    )
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
