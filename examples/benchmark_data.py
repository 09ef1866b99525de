# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Throughput of the product-pair pipeline for each catalogue layout and image size, next to the training step's.

Pairs/s of ``ProductPairStream`` over ``load_product_stream`` exactly as pretraining runs it (the recipe's
augmentation and catalog anchors, ``--num-workers`` decode workers of the stream itself, the processor at the model's
``--input-size``), for the same products laid out three ways:

* (a) format 1, the old shards (``<split>/shard-*.parquet``, raw image bytes), read as plain parquet
  (``CatalogueSource("parquet", data_files=...)``);
* (b) format 2, one product per row (``shard_format.py``: a list of ``datasets.Image()`` per product);
* (c) one image per row (``product_id, title, category, image: Image(), source, kind``; the rows of a product
  consecutive), read through the column mapping ``CatalogueColumns(image="image")``, as most public product datasets
  would be;

each with the catalogue's images re-encoded as PNG at every ``--image-sizes`` (128 and 224 px) and as photo-like
``--photo-size`` JPEGs (1000 px, quality 90: the product enlarged onto a textured background, with sensor noise),
decoded in full and with reduced decoding (``Image.draft``: a JPEG decoded at 1/2, 1/4 or 1/8 scale, the smallest
that leaves the model its full input resolution after the augmentation's crop; ``stream.min_decode_size``). Next to
them: samples/s of a full ``EclipForPreTraining`` step at ``--input-size`` (every objective, bf16 autocast, AdamW)
measured in the same run, and the ratio pipeline / step (target: >= 3 at 224 px, so the loader never starves
training). Everything is built once into ``--work-dir`` (reused while the build flags are unchanged)::

    .venv/bin/python examples/benchmark_data.py --catalogue data/demo --work-dir /tmp/eclip-benchmark-data

Which streams faster, one product per row (b) or one image per row (c), and why. Neither, measurably: their pairs/s
are within run-to-run noise. Both reach the stream as the same product records (``CatalogueSource.products``) and the
decode workers then do identical work (decoding, augmentation), which dominates; only the reading differs, and it runs
in the training process beside batching and the processor, 5-19x faster than the pairs it feeds:

* Row count: (c) has one row per image, 8 times as many rows for the demo's 8 images per product, which
  ``CatalogueSource`` streams row by row and regroups in python (compare each row's product id with the previous one,
  rebuild the image list); (b) converts one nested list per product, with boxes. ``datasets``' own iteration of (c)'s
  flat rows is faster per product, the regrouped products slower (up to 1.8x with 224 and 128 px images; about as fast
  with photos, where the bytes dominate), and the bytes read are the same: every image of a product is read, though only
  two are decoded.
* Shuffle buffer: ``load_product_stream`` shuffles the *grouped* products, so a buffer of N holds N products in both
  layouts, with all their image bytes (1000 products of 8 photos of ~250 KB: ~2 GB per process). Shuffling the raw
  rows instead, as ``load_dataset(...).shuffle(buffer_size=N)`` on (c) would, holds N *images* (N / 8 products' worth
  of mixing) and, worse, scatters a product's images so the consecutive-rows grouping no longer finds them: an
  image-per-row dataset must be shuffled after grouping, which is what the stream does. The file order is shuffled
  too (one ``datasets`` shard per data file); (c) has the same number of files for the same bytes.
* Resume and sharding: positions and ``split_dataset_by_node`` count products in both, since both work on the grouped
  stream; (c) cannot tell its product count from the parquet footers (``CatalogueSource.num_products`` is None) and
  needs its rows ordered by product.

The measured table and the read-only rates (products/s through ``load_product_stream`` without decoding) are in the
README. For a quick check (a test runs this)::

    .venv/bin/python examples/benchmark_data.py --catalogue CATALOGUE --num-products 12 --image-sizes 32 \
        --photo-size 256 --input-size 64 --batch-size 4 --loader-batches 2 --read-repeats 1 --steps 1
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from modeling_eclip import EclipConfig, EclipForPreTraining, EclipProcessor
from modeling_eclip.data.shard_format import (
    DEFAULT_MAX_SHARD_BYTES,
    DEFAULT_ROW_GROUP_SIZE,
    IMAGE_KINDS,
    ShardWriter,
    list_shards,
    old_layout_splits,
    shard_name,
    write_dataset_card,
)
from modeling_eclip.data.source import CatalogueColumns, CatalogueSource
from modeling_eclip.data.stream import DEFAULT_SHUFFLE_BUFFER, ProductPairStream, load_product_stream
from modeling_eclip.processing_eclip import to_rgb_image
from modeling_eclip.training.arguments import read_model_config
from modeling_eclip.training.builders import build_processor

# Bump when the built data changes, so an old work folder is rebuilt.
BUILD_VERSION = 1
SPLIT = "train"
LAYOUTS = {
    "a": "(a) format 1: product per row, raw bytes",
    "b": "(b) format 2: product per row, Image()",
    "c": "(c) image per row, column mapping",
}
# The format-1 schema (modeling_eclip/data/migrate.py reads it), kept here to write the old shards for comparison.
FORMAT1_IMAGE = pa.struct(
    [
        pa.field("image", pa.binary(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("boxes", pa.list_(pa.list_(pa.float32())), nullable=False),
        pa.field("box_product_ids", pa.list_(pa.string()), nullable=False),
    ]
)
FORMAT1_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("images", pa.list_(FORMAT1_IMAGE), nullable=False),
    ],
    metadata={"eclip_shard_format_version": "1"},
)
IMAGE_PER_ROW_FEATURES = datasets.Features(
    {
        "product_id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "category": datasets.Value("string"),
        "image": datasets.Image(),
        "source": datasets.Value("string"),
        "kind": datasets.ClassLabel(names=list(IMAGE_KINDS)),
    }
)


# --------------------------------------------------------------------------------------------------- input data
def catalogue_source(folder: Path) -> CatalogueSource:
    """A catalogue folder of format 2, or of format 1 read as plain parquet."""
    if list_shards(folder, SPLIT) or not old_layout_splits(folder):
        return CatalogueSource(str(folder))
    return CatalogueSource(
        "parquet", data_files={SPLIT: [str(p) for p in sorted((folder / SPLIT).glob("shard-*.parquet"))]}
    )


def read_products(folder: Path, num_products: int | None) -> list[dict[str, Any]]:
    """The first ``num_products`` train products of a catalogue as ``ShardWriter`` rows (images as bytes)."""
    rows = []
    for product in catalogue_source(folder).iter_products(SPLIT):
        images = [
            {key: image[key] for key in ("image", "source", "kind", "boxes", "box_product_ids")}
            for image in product["images"]
        ]
        if any(image["image"] is None for image in images):
            raise ValueError(f"{folder}: product {product['product_id']} has an image stored as a path; embed bytes")
        rows.append({**{key: product[key] for key in ("product_id", "title", "category")}, "images": images})
        if num_products is not None and len(rows) == num_products:
            break
    if len(rows) < 2:
        raise ValueError(f"{folder} has fewer than 2 {SPLIT} products")
    return rows


def _encode(image: Image.Image, image_format: str, **save: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **save)
    return buffer.getvalue()


def png_rows(rows: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Every image as a PNG whose longer side is ``size`` (the stored bytes as they are when already that size)."""
    resized = []
    for row in rows:
        images = []
        for image in row["images"]:
            decoded = to_rgb_image(image["image"])
            scale = size / max(decoded.size)
            data = image["image"]
            if scale != 1:
                new_size = (max(1, round(decoded.width * scale)), max(1, round(decoded.height * scale)))
                data = _encode(decoded.resize(new_size, Image.Resampling.BICUBIC), "PNG")
            boxes = [[coordinate * scale for coordinate in box] for box in image["boxes"]]
            images.append({**image, "image": data, "boxes": boxes})
        resized.append({**row, "images": images})
    return resized


def photo_rows(rows: list[dict[str, Any]], size: int, seed: int = 0) -> list[dict[str, Any]]:
    """Every image as a ``size`` x ``size`` photo-like JPEG (quality 90): the image enlarged to 45-80% of the side at a
    random place on a smooth colour gradient, the whole covered with film-grain texture, so that it compresses and
    decodes like a camera photo, not like a flat illustration. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    backgrounds = [
        np.stack([150 + 70 * np.sin(3 * x + 2 * y + phase) for phase in rng.uniform(0, 2 * np.pi, 3)], axis=-1)
        for _ in range(4)
    ]
    grains = [rng.normal(0, 7, (size, size, 3)).astype(np.float32) for _ in range(4)]
    photos = []
    for row in rows:
        images = []
        for image in row["images"]:
            product = to_rgb_image(image["image"])
            side = int(size * rng.uniform(0.45, 0.8))
            scale = side / max(product.size)
            product = product.resize(
                (max(1, round(product.width * scale)), max(1, round(product.height * scale))), Image.Resampling.BICUBIC
            )
            left, top = (int(rng.integers(0, size - extent + 1)) for extent in product.size)
            canvas = backgrounds[int(rng.integers(len(backgrounds)))].copy()
            canvas[top : top + product.height, left : left + product.width] = np.asarray(product, dtype=np.float32)
            canvas += np.roll(grains[int(rng.integers(len(grains)))], int(rng.integers(size)), axis=0)
            photo = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
            boxes = [
                [box[0] * scale + left, box[1] * scale + top, box[2] * scale + left, box[3] * scale + top]
                for box in image["boxes"]
            ]
            images.append({**image, "image": _encode(photo, "JPEG", quality=90), "boxes": boxes})
        photos.append({**row, "images": images})
    return photos


# ------------------------------------------------------------------------------------------------------ layouts
def _file_groups(sizes: list[int], max_bytes: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of consecutive rows of at most about ``max_bytes`` each (at least one row)."""
    groups, start, total = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and total + size > max_bytes:
            groups.append((start, index))
            start, total = index, 0
        total += size
    groups.append((start, len(sizes)))
    return groups


def _row_bytes(row: dict[str, Any]) -> int:
    return sum(len(image["image"]) for image in row["images"])


def write_format1(rows: list[dict[str, Any]], root: Path, max_bytes: int) -> None:
    """The old layout: ``<root>/train/shard-NNNNN.parquet`` with raw binary images and string kinds."""
    groups = _file_groups([_row_bytes(row) for row in rows], max_bytes)
    for index, (start, end) in enumerate(groups):
        table = pa.Table.from_pylist([{**row, "split": SPLIT} for row in rows[start:end]], schema=FORMAT1_SCHEMA)
        path = root / SPLIT / f"shard-{index:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=DEFAULT_ROW_GROUP_SIZE, compression="zstd", compression_level=3)


def write_format2(rows: list[dict[str, Any]], root: Path, max_bytes: int) -> None:
    """Our layout: ``shard_format.ShardWriter`` files and a dataset card."""
    with ShardWriter(root, SPLIT, max_bytes=max_bytes) as writer:
        for row in rows:
            writer.write(row)
    write_dataset_card(root, "Benchmark catalogue", "Built by examples/benchmark_data.py.", license="other")


def write_image_per_row(rows: list[dict[str, Any]], root: Path, max_bytes: int) -> None:
    """One image per row, the rows of a product consecutive, in ``data/train-NNNNN-of-MMMMM.parquet`` files split at
    the same bytes as (b); row groups hold as many images as (b)'s hold (``DEFAULT_ROW_GROUP_SIZE`` products)."""
    images = [
        {
            "product_id": row["product_id"],
            "title": row["title"],
            "category": row["category"],
            "image": {"bytes": image["image"], "path": None},
            "source": image["source"],
            "kind": IMAGE_KINDS.index(image["kind"]),
        }
        for row in rows
        for image in row["images"]
    ]
    images_per_product = max(1, round(len(images) / len(rows)))
    groups = _file_groups([len(image["image"]["bytes"]) for image in images], max_bytes)
    for index, (start, end) in enumerate(groups):
        table = pa.Table.from_pylist(images[start:end], schema=IMAGE_PER_ROW_FEATURES.arrow_schema)
        path = root / "data" / shard_name(SPLIT, index, len(groups))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            table,
            path,
            row_group_size=DEFAULT_ROW_GROUP_SIZE * images_per_product,
            compression="zstd",
            compression_level=3,
        )


WRITERS = {"a": write_format1, "b": write_format2, "c": write_image_per_row}


def open_layout(key: str, root: Path) -> CatalogueSource:
    """The source of a layout built by ``WRITERS[key]`` into ``root``."""
    if key == "c":
        return CatalogueSource(str(root), columns=CatalogueColumns(image="image"))
    return catalogue_source(root)


def build_work_folder(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Build (or reuse) every variant x layout under ``--work-dir``; returns the variants and their built layouts."""
    variants: dict[str, dict[str, Any]] = {f"png-{size}": {"size": size, "format": "png"} for size in args.image_sizes}
    if args.photo_size:
        variants[f"jpeg-{args.photo_size}"] = {"size": args.photo_size, "format": "jpeg"}
    recipe = {
        "build_version": BUILD_VERSION,
        "catalogue": str(args.catalogue.resolve()),
        "num_products": args.num_products,
        "variants": variants,
        "max_shard_bytes": args.max_shard_bytes,
    }
    manifest_path = args.work_dir / "manifest.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()) == recipe:
        print(f"reusing the data built in {args.work_dir}", file=sys.stderr)
        return variants
    if args.work_dir.exists() and any(args.work_dir.iterdir()) and not manifest_path.is_file():
        raise FileExistsError(f"--work-dir {args.work_dir} holds files of something else; name an empty or new folder")
    for name in ("manifest.json", *variants, *(p.name for p in args.work_dir.glob("*-*") if p.is_dir())):
        path = args.work_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    print(f"building the benchmark data into {args.work_dir} ...", file=sys.stderr)
    rows = read_products(args.catalogue, args.num_products)
    for name, variant in variants.items():
        if variant["format"] == "png":
            variant_rows = png_rows(rows, variant["size"])
        else:
            variant_rows = photo_rows(rows, variant["size"])
        for key, writer in WRITERS.items():
            writer(variant_rows, args.work_dir / name / key, args.max_shard_bytes)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(recipe, indent=2))
    return variants


def describe_layout(root: Path) -> dict[str, Any]:
    """Files, rows and bytes of a built layout."""
    files = sorted(root.rglob("*.parquet"))
    return {
        "files": len(files),
        "rows": sum(pq.ParquetFile(path).metadata.num_rows for path in files),
        "megabytes": sum(path.stat().st_size for path in files) / 1e6,
    }


# ------------------------------------------------------------------------------------------------- measurements
def pair_stream(source: CatalogueSource, processor: EclipProcessor, args: argparse.Namespace, reduced: bool):
    """The training pipeline over ``source``, as ``examples/pretrain.py`` builds it with the demo recipe."""
    products = load_product_stream(source, SPLIT, shuffle_buffer=args.shuffle_buffer, seed=0)
    return ProductPairStream(
        products,
        processor,
        batch_size=args.batch_size,
        seed=0,
        num_workers=args.num_workers,
        augment=True,
        anchor_kind="catalog",
        reduced_decoding=reduced,
    )


def endless(stream: ProductPairStream) -> Iterator[dict[str, torch.Tensor]]:
    """Batches epoch after epoch (each epoch refills the shuffle buffer, as in training)."""
    while True:
        count = 0
        for batch in stream:
            count += 1
            yield batch
        if count == 0:
            raise ValueError("an epoch gave no batch: fewer distinct products than --batch-size")


def measure_pairs(source: CatalogueSource, processor: EclipProcessor, args: argparse.Namespace, reduced: bool) -> float:
    """Pairs/s over ``--loader-batches`` batches after a first one (decode pool start and first buffer fill)."""
    batches = endless(pair_stream(source, processor, args, reduced))
    try:
        next(batches)
        start = time.perf_counter()
        for _ in range(args.loader_batches):
            next(batches)
        return args.loader_batches * args.batch_size / (time.perf_counter() - start)
    finally:
        batches.close()  # ends the stream's decode pool


def measure_reading(source: CatalogueSource, args: argparse.Namespace) -> float:
    """Products/s of one epoch through ``load_product_stream`` (reading, grouping, shuffling; no decoding), the best of
    ``--read-repeats`` epochs after an untimed one (file opening, page cache): reading is the cheap part, and on
    shared cores the best pass is the one least disturbed."""
    stream = load_product_stream(source, SPLIT, shuffle_buffer=args.shuffle_buffer, seed=0)
    speeds = []
    for epoch in range(args.read_repeats + 1):
        stream.set_epoch(epoch)
        start = time.perf_counter()
        products = sum(len(rows["product_id"]) for rows in stream.iter(batch_size=64))
        speeds.append(products / (time.perf_counter() - start))
    return max(speeds[1:])


def measure_step(config: EclipConfig, batch: dict, steps: int) -> float:
    """Samples/s of forward + backward + AdamW on one fixed batch, after one warm-up step."""
    torch.manual_seed(0)
    model = EclipForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(**batch)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.enqueue(output)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch["pixel_values"].shape[0] / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    setup = report["setup"]
    step = report["step_samples_per_s"]
    lines = [
        f"Product-pair pipeline ({setup['num_workers']} decode workers, batch {setup['batch_size']}, processor at "
        f"{setup['input_size']} px, augmentation on) vs the EclipForPreTraining step ({setup['config']} at "
        f"{setup['input_size']} px, bf16 autocast, AdamW); {setup['num_products']} products, "
        f"{setup['loader_batches']} timed batches per row.",
        "",
        "| layout | image size | pairs/s | ratio to step |",
        "| --- | --- | ---: | ---: |",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['layout']} | {row['image_size']} | {row['pairs_per_s']:.1f} | {row['pairs_per_s'] / step:.1f}x |"
        )
    lines.append(f"| EclipForPreTraining step (samples/s) | {setup['input_size']} px input | {step:.1f} | 1.0x |")
    lines += [
        "",
        "| layout | image size | files | rows | MB | products/s read (no decoding) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in report["reading"]:
        lines.append(
            f"| {row['layout']} | {row['image_size']} | {row['files']} | {row['rows']} | {row['megabytes']:.1f} | "
            f"{row['products_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalogue", type=Path, default=Path("data/demo"), help="source catalogue (format 1 or 2)")
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "eclip-benchmark-data", help="built data"
    )
    parser.add_argument("--num-products", type=int, default=None, help="train products taken (default: all)")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[128, 224], help="PNG image sizes (px)")
    parser.add_argument("--photo-size", type=int, default=1000, help="photo JPEG side (px); 0: no photo rows")
    parser.add_argument("--max-shard-bytes", type=int, default=DEFAULT_MAX_SHARD_BYTES, help="bytes per data file")
    parser.add_argument("--config", default="eclip-tiny", help="a shipped preset (configuration/) or a config JSON")
    parser.add_argument("--input-size", type=int, default=224, help="model input side (px) of the processor and step")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2, help="the stream's decode workers (default 2)")
    parser.add_argument("--shuffle-buffer", type=int, default=DEFAULT_SHUFFLE_BUFFER)
    parser.add_argument("--loader-batches", type=int, default=20, help="timed batches per row (default 20)")
    parser.add_argument("--read-repeats", type=int, default=3, help="timed read-only epochs per layout (best kept)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (default 5)")
    parser.add_argument("--output", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    for name in ("batch_size", "loader_batches", "read_repeats", "steps", "input_size", "max_shard_bytes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.photo_size < 0 or any(size < 1 for size in args.image_sizes):
        parser.error("--image-sizes must be >= 1 and --photo-size >= 0")

    variants = build_work_folder(args)
    config = EclipConfig(**read_model_config(args.config))
    config.vision_config.image_size = args.input_size
    processor = build_processor(args.input_size)

    rows, reading = [], []
    for name, variant in variants.items():
        size = f"{variant['size']} px {variant['format'].upper()}"
        sources = {key: open_layout(key, args.work_dir / name / key) for key in LAYOUTS}
        for key, label in LAYOUTS.items():
            print(f"reading {label} at {size} ...", file=sys.stderr)
            speed = measure_reading(sources[key], args)
            reading.append({"layout": label, "image_size": size, **describe_layout(args.work_dir / name / key)})
            reading[-1]["products_per_s"] = speed
        # A PNG decodes in full either way; a JPEG is measured decoded in full and at a reduced scale.
        decodings = {"": True} if variant["format"] == "png" else {", full decoding": False, ", reduced decoding": True}
        for decoding, reduced in decodings.items():
            for key, label in LAYOUTS.items():
                print(f"measuring {label} at {size}{decoding} ...", file=sys.stderr)
                pairs = measure_pairs(sources[key], processor, args, reduced)
                rows.append({"layout": label, "image_size": size + decoding, "pairs_per_s": pairs})

    first = next(iter(variants))
    batch = next(endless(pair_stream(open_layout("b", args.work_dir / first / "b"), processor, args, True)))
    step = measure_step(config, batch, args.steps)
    report = {
        "setup": {
            "config": args.config,
            "input_size": args.input_size,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "shuffle_buffer": args.shuffle_buffer,
            "loader_batches": args.loader_batches,
            "num_products": describe_layout(args.work_dir / first / "b")["rows"],
            "torch_threads": torch.get_num_threads(),
        },
        "step_samples_per_s": step,
        "rows": [{**row, "ratio_to_step": row["pairs_per_s"] / step} for row in rows],
        "reading": reading,
    }
    print(markdown(report))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
