# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Convert a catalogue of the old shard format (1: ``<split>/shard-*.parquet``, raw image bytes) into the Hub dataset
layout of ``modeling_eclip/data/shard_format.py`` (format 2), so no catalogue is stranded.

Every product row is carried over unchanged (images as ``datasets.Image()`` bytes, kinds as class labels), except that
an image in another format than PNG or JPEG that Pillow decodes (GIF, WebP, BMP, TIFF...) is re-encoded losslessly as
PNG (``shard_format.as_png_or_jpeg``: first frame, same pixels, so its boxes still fit) and counted; an image nothing
decodes, or a row that breaks the format, stops the migration with its file, row, split and product named. The
licence and attribution files and ``dataset_info.json`` are copied; a dataset card (``README.md``) is written. The
old folder is only read. A non-empty ``--output`` is refused unless ``--overwrite``; ``--push_to_hub REPO_ID`` uploads
the finished folder to a Hub dataset repository (``modeling_eclip/data/hub.py``)::

    python -m modeling_eclip.data.migrate data/shop-v1 --output data/shop --license cc-by-4.0
    python -m modeling_eclip.data.migrate data/shop-v1 --output data/shop --push_to_hub my-org/shop --private
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .hub import add_push_arguments, check_repo_id, run_build_command
from .output_folder import replacing_output_folder
from .shard_format import ShardWriter, as_png_or_jpeg, check_card_licence, old_layout_splits, write_dataset_card

# Files of an old catalogue folder that travel with the data.
CARRIED_FILES = ("LICENSE-DATA.md", "ATTRIBUTION.md", "dataset_info.json", "rejections.json")
OLD_COLUMNS = ("product_id", "title", "category", "images")


def migrate(
    old: str | Path, output: str | Path, license: str = "other", overwrite: bool = False, validate: bool = True
) -> dict[str, Any]:
    """Write the format-2 catalogue of the format-1 catalogue ``old`` into ``output``; returns ``{"products": products
    per split, "converted_images": images re-encoded as PNG per original format}``.

    The card's licence is ``license``; with ``other`` and a ``LICENSE-DATA.md`` in ``old``, the card links to it."""
    check_card_licence(license)
    old = Path(old)
    if not old.is_dir():
        raise FileNotFoundError(f"{old} is not a folder")
    splits = old_layout_splits(old)
    if not splits:
        raise FileNotFoundError(f"{old} holds no <split>/shard-*.parquet files of the old format")
    counts: dict[str, int] = {}
    converted: Counter[str] = Counter()
    with replacing_output_folder(output, overwrite) as staging:
        for split in splits:
            with ShardWriter(staging, split, validate=validate) as writer:
                for path in sorted((old / split).glob("shard-*.parquet")):
                    parquet = pq.ParquetFile(path)
                    missing = set(OLD_COLUMNS) - set(parquet.schema_arrow.names)
                    if missing:
                        raise ValueError(f"{path} is not an ECLIP shard: no column(s) {', '.join(sorted(missing))}")
                    number = 0
                    for group in range(parquet.num_row_groups):
                        for row in parquet.read_row_group(group, columns=list(OLD_COLUMNS)).to_pylist():
                            try:
                                writer.write(_standard_images(row, converted))
                            except ValueError as error:
                                raise ValueError(f"{path} row {number} (split {split}): {error}") from None
                            number += 1
            counts[split] = writer.num_rows
        for name in CARRIED_FILES:
            if (old / name).is_file():
                shutil.copy2(old / name, staging / name)
        info = json.loads((old / "dataset_info.json").read_text()) if (old / "dataset_info.json").is_file() else {}
        linked = license == "other" and (old / "LICENSE-DATA.md").is_file()
        write_dataset_card(
            staging,
            pretty_name=info.get("name") or old.resolve().name,
            description=info.get("description") or f"Product catalogue migrated from {old.resolve().name}.",
            license=license,
            license_name=f"{old.resolve().name}-data-licence" if linked else "",
            license_link="LICENSE-DATA.md" if linked else "",
        )
    return {"products": counts, "converted_images": dict(converted)}


def _standard_images(row: dict[str, Any], converted: Counter[str]) -> dict[str, Any]:
    """``row`` with every image in a format other than PNG or JPEG re-encoded as PNG (counted in ``converted`` by
    original format); ``ValueError`` naming the product and image for bytes nothing decodes."""
    images = row.get("images")
    if not isinstance(images, list):
        return row  # validate_row names what is wrong
    standard = []
    for index, image in enumerate(images):
        if isinstance(image, dict) and isinstance(image.get("image"), bytes):
            try:
                data, original = as_png_or_jpeg(image["image"])
            except ValueError as error:
                raise ValueError(
                    f"product {row.get('product_id')} image {index}: {error}; replace the image in the old catalogue, "
                    "or remove it"
                ) from None
            if original is not None:
                converted[original] += 1
                image = {**image, "image": data}
        standard.append(image)
    return {**row, "images": standard}


def main(argv: Sequence[str] | None = None, hub_api: Any = None) -> int:
    """Run the migration and push with ``--push_to_hub`` (``hub_api``: the ``HfApi``, tests pass a stand-in); exit
    status 2 with a message when there is nothing to migrate or the output is not empty."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="catalogue folder of the old format (<split>/shard-*.parquet)")
    parser.add_argument("--output", required=True, help="new catalogue folder (data/<split>-*.parquet, README.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    parser.add_argument(
        "--license", default="other", help="licence id for the dataset card (e.g. apache-2.0; default other)"
    )
    add_push_arguments(parser)
    args = parser.parse_args(argv)

    def build() -> dict[str, Any]:
        check_repo_id(args.push_to_hub)  # before any work: a bad id must not cost a migration
        return migrate(args.old, args.output, license=args.license, overwrite=args.overwrite)

    return run_build_command(
        build,
        (ValueError, FileExistsError, FileNotFoundError),
        lambda report, _: summary(report),
        push=(args.output, args),
        hub_api=hub_api,
    )


def summary(report: dict[str, Any]) -> str:
    """The products of each split and the images converted to PNG, one line each."""
    lines = [f"{split}: {count} products" for split, count in report["products"].items()]
    lines += [f"converted to PNG: {count} {kind} image(s)" for kind, count in report["converted_images"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
