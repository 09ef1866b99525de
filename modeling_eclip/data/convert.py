# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Convert a product-image catalogue (JSONL, CSV or a saved ``datasets`` dataset) into an ECLIP catalogue folder,
a Hugging Face dataset repository as is.

Input: one row per product image with ``product_id``, ``title``, optional ``category``, ``image`` (a path relative to
the catalogue file's folder; in a saved dataset also an ``Image`` feature), optional ``source`` and optional ``kind``
(``catalog`` / ``customer`` / ``ad``). Files are UTF-8 (a byte-order mark is fine); a CSV file may separate its
columns by ``,``, ``;``, tab or ``|`` (read from its header). Output: the catalogue layout of
``modeling_eclip/data/shard_format.py``, one row per product: ``<output>/data/<split>-NNNNN-of-MMMMM.parquet``
(images as ``datasets.Image()``, kinds as class labels), a dataset card ``<output>/README.md`` (``--license``, a Hub
licence id, or ``other`` with ``--license-name`` and ``--license-link``; ``--pretty-name``; ``--description``) and
the report ``<output>/rejections.json``. ``datasets.load_dataset(output)`` reads it with nothing of ours imported, and
``--push_to_hub REPO_ID`` uploads the finished folder to a Hub dataset repository (``modeling_eclip/data/hub.py``).

Image paths must stay inside the catalogue's folder (no ``..``, absolute path or symbolic link that leaves it): a
catalogue from elsewhere must not make the converter read ``/proc/self/environ`` or ``~/.ssh`` into a dataset.
``--allow-outside-paths`` lifts that for a catalogue you trust. Only regular files are read (never ``/dev/zero``).

Nothing is dropped silently: every rejected row is counted by reason (printed, and saved as ``rejections.json``), and
rows that give a product another title or category than its first row are counted as conflicts (the first is kept).
A malformed file (not UTF-8, a line that is not a JSON object, an ``image`` that is not a path) is an error naming
the file and line; a conversion that accepts no product fails with a non-zero exit status. A non-empty ``--output``
is refused unless ``--overwrite``; the catalogue is built beside it and swapped in whole, and only then pushed::

    python -m modeling_eclip.data.convert catalogue.jsonl --output data/shop --image-size 128 \
        --license cc-by-4.0 --pretty-name "My shop" --push_to_hub my-org/shop-catalogue --private

Rows are grouped by product in memory (only the re-encoded images are kept, so pre-resizing keeps this small).
"""

from __future__ import annotations

import argparse
import codecs
import csv
import hashlib
import io
import itertools
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

from ..processing_eclip import (
    ImageFileTooLargeError,
    NotARegularFileError,
    is_blank_text,
    open_image_file,
    to_rgb_image,
)
from .hub import add_push_arguments, check_repo_id, run_build_command
from .output_folder import check_output_folder, replacing_output_folder
from .shard_format import (
    IMAGE_KINDS,
    SPLITS,
    ShardWriter,
    check_card_licence,
    write_dataset_card,
)

REJECTION_REASONS = (
    "no_product_id",
    "no_title",
    "invalid_kind",
    "path_outside_catalogue",
    "not_a_regular_file",
    "image_file_too_large",
    "missing_image_file",
    "duplicate",
    "unreadable_image",
    "single_image_product",
)
REQUIRED_COLUMNS = ("product_id", "title", "image")
CSV_DELIMITERS = (",", ";", "\t", "|")
CONFLICT_FIELDS = ("title", "category")
MAX_CONFLICT_EXAMPLES = 10
DEFAULT_SOURCE = "catalogue"
DEFAULT_KIND = "catalog"
DEFAULT_CATEGORY = "uncategorized"
JPEG_QUALITY = 90
# The ViT image processor's default resample: pre-resizing with it gives the pixels the model would have seen.
RESAMPLE = Image.Resampling.BILINEAR


class CatalogueError(ValueError):
    """The catalogue cannot be converted: a malformed file (the message names the file and line) or no product
    accepted (``report`` then holds the counts)."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, line endings kept and a leading byte-order mark dropped."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CatalogueError(
                    f"{path}, line {number}: not UTF-8 (byte {raw[error.start]:#04x} at column {error.start + 1}); "
                    "save the catalogue as UTF-8"
                ) from None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in _decoded_lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise CatalogueError(f"{where}: not JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(row, dict):
            raise CatalogueError(
                f"{where}: expected a JSON object with {', '.join(REQUIRED_COLUMNS)}, got {line[:80]!r}"
            )
        yield where, row


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    lines = _decoded_lines(path)
    first = next(lines, (1, ""))[1]
    # The delimiter is the one that splits the header into the required columns.
    for delimiter in CSV_DELIMITERS:
        header = [name.strip() for name in next(csv.reader([first], delimiter=delimiter), [])]
        if set(REQUIRED_COLUMNS) <= set(header):
            break
    else:
        raise CatalogueError(
            f"{path}, line 1: the header must name the columns {', '.join(REQUIRED_COLUMNS)} separated by one of "
            f"{' '.join(repr(d) for d in CSV_DELIMITERS)}; found {first.strip()[:200]!r}"
        )
    reader = csv.reader(itertools.chain([first], (line for _, line in lines)), delimiter=delimiter)
    try:
        next(reader)
        for fields in reader:
            where = f"{path}, line {reader.line_num}"
            if any(field.strip() for field in fields[len(header) :]):
                raise CatalogueError(
                    f"{where}: {len(fields)} values for {len(header)} columns; quote values that hold {delimiter!r}"
                )
            if any(field.strip() for field in fields):
                yield where, dict(zip(header, fields))
    except csv.Error as error:
        raise CatalogueError(f"{path}, line {reader.line_num}: {error}") from None


def read_catalogue(path: str | os.PathLike) -> tuple[Iterator[tuple[str, dict[str, Any]]], Path]:
    """(where, row) pairs of a ``.jsonl`` / ``.csv`` file or a ``save_to_disk`` folder (``where`` names the file and
    line, or the row, for messages), and the folder relative image paths start from."""
    path = Path(path)
    if path.is_dir():
        import datasets

        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            raise ValueError(f"{path} holds a DatasetDict; pass the folder of one split")
        missing = [column for column in REQUIRED_COLUMNS if column not in dataset.column_names]
        if missing:
            raise CatalogueError(
                f"{path}: the dataset has no column {', '.join(missing)}; it has {dataset.column_names}"
            )
        if isinstance(dataset.features.get("image"), datasets.Image):
            # Raw bytes/path rather than decoded PIL images: decoding is done (and failures counted) here.
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        return ((f"{path}, row {index}", row) for index, row in enumerate(dataset)), path
    if path.suffix == ".jsonl":
        return _jsonl_rows(path), path.parent
    if path.suffix == ".csv":
        return _csv_rows(path), path.parent
    raise ValueError(f"{path}: expected a .jsonl or .csv file or a datasets folder saved with save_to_disk")


def _text(row: dict[str, Any], key: str, where: str) -> str:
    """A text field, stripped; a missing one is empty. Integers are taken as text (numeric product ids)."""
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CatalogueError(f"{where}: {key} must be a string, got {type(value).__name__} {str(value)[:80]!r}")
    return str(value).strip()


def read_regular_file(path: Path) -> bytes | None:
    """The bytes of ``path``, or ``None`` when it is not a regular file (a device, a FIFO, a folder), read through the
    decoder's ``open_image_file``: never blocking, and a file over ``MAX_IMAGE_FILE_BYTES`` raises
    ``ImageFileTooLargeError`` before it is read. An empty file gives ``b""`` (the decoder then rejects it)."""
    try:
        with open_image_file(path) as file:
            return file.read()
    except NotARegularFileError:
        return None
    except ImageFileTooLargeError:
        raise
    except ValueError:  # empty: left to the decoder, as before, so the row is counted where it always was
        return b""


def _image_input(value: Any, root: Path, where: str, allow_outside_paths: bool) -> tuple[Any, str | None]:
    """(what to decode, None) or (None, rejection reason) for the ``image`` field of a row."""
    if isinstance(value, dict):  # a datasets Image feature with decode=False
        if value.get("bytes"):
            return bytes(value["bytes"]), None
        value = value.get("path")
    if isinstance(value, Image.Image):
        return value, None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if not value:
        return None, "missing_image_file"
    if not isinstance(value, (str, os.PathLike)):
        raise CatalogueError(f"{where}: image must be a path, got {type(value).__name__} {str(value)[:80]!r}")
    try:
        # resolve() follows symbolic links and "..", so the check sees the file that would be read.
        file = (root / value).resolve()
    except ValueError:  # a NUL byte: no such file can exist
        return None, "missing_image_file"
    if not allow_outside_paths and not file.is_relative_to(root.resolve()):
        return None, "path_outside_catalogue"
    try:
        data = read_regular_file(file)
    except FileNotFoundError:
        return None, "missing_image_file"
    except ImageFileTooLargeError:
        return None, "image_file_too_large"
    except OSError:  # permission denied, a socket, ...
        return None, "unreadable_image"
    return (data, None) if data is not None else (None, "not_a_regular_file")


def check_options(test_fraction: float | None, image_size: int | None, seed: int) -> None:
    """Raise ``ValueError`` naming the option when one is out of range."""
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        raise ValueError(f"--test-fraction (test_fraction) must be in (0, 1), got {test_fraction}")
    if image_size is not None and image_size <= 0:
        raise ValueError(f"--image-size (image_size) must be a positive number of pixels, got {image_size}")
    if seed < 0:
        raise ValueError(f"--seed (seed) must be non-negative, got {seed}")


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
    """Product id -> ``train`` / ``test``: a seeded permutation of the sorted ids puts the first fraction in test
    (rounded, and at least one product in each split when there are two or more)."""
    ordered = sorted(product_ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    num_test = round(test_fraction * len(ordered))
    if len(ordered) >= 2:
        num_test = min(max(num_test, 1), len(ordered) - 1)
    return {ordered[i]: ("test" if rank < num_test else "train") for rank, i in enumerate(order)}


def convert(
    catalogue: str | os.PathLike,
    output: str | os.PathLike,
    split: str = "train",
    test_fraction: float | None = None,
    seed: int = 0,
    image_size: int | None = None,
    image_format: str = "auto",
    overwrite: bool = False,
    allow_outside_paths: bool = False,
    license: str = "other",
    license_name: str = "",
    license_link: str = "",
    pretty_name: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Convert ``catalogue`` into the catalogue folder ``output``; returns the report (also saved as
    ``rejections.json``).

    ``image_format``: ``png``, ``jpeg`` or ``auto`` (PNG sources stay PNG, everything else becomes JPEG q90).
    A non-empty ``output`` is refused (``FileExistsError``) unless ``overwrite``; it is then replaced whole, and only
    once the new catalogue is complete. Image paths that leave the catalogue's folder are rejected
    (``path_outside_catalogue``) unless ``allow_outside_paths``. Raises ``CatalogueError`` naming the file and line
    for a malformed catalogue, and (with the report) when no product is accepted.

    The dataset card (``README.md``) states ``license`` (a Hub licence id such as ``cc-by-4.0``, or ``other`` with
    ``license_name`` and ``license_link``, a file you add to the repository or a URL), ``pretty_name`` (default: the
    output folder's name) and ``description`` (default: where the data came from and what was rejected).
    """
    check_options(test_fraction, image_size, seed)
    check_card_licence(license, license_name, license_link)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if image_format not in ("auto", "png", "jpeg"):
        raise ValueError(f"image_format must be auto, png or jpeg, got {image_format!r}")
    output = check_output_folder(output, overwrite)
    rows, root = read_catalogue(catalogue)
    if root.resolve().is_relative_to(output.resolve()):
        raise ValueError(f"the output {output} holds the catalogue's folder {root}; write the shards elsewhere")
    # A truncated file must count as unreadable, never be padded with grey: make sure nobody turned that on.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    rejected: Counter[str] = Counter({reason: 0 for reason in REJECTION_REASONS})
    conflicts = {field: {"rows": 0, "products": []} for field in CONFLICT_FIELDS}
    conflicting: dict[str, set[str]] = {field: set() for field in CONFLICT_FIELDS}
    products: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    num_rows = 0
    for where, row in tqdm(rows, desc="reading the catalogue", unit=" rows", dynamic_ncols=True):
        num_rows += 1
        product_id, title = _text(row, "product_id", where), _text(row, "title", where)
        if not product_id:
            rejected["no_product_id"] += 1
            continue
        if is_blank_text(title):  # the processor's text rule: nothing to read (zero-width characters included)
            rejected["no_title"] += 1
            continue
        kind = _text(row, "kind", where) or DEFAULT_KIND
        if kind not in IMAGE_KINDS:
            rejected["invalid_kind"] += 1
            continue
        data, reason = _image_input(row.get("image"), root, where, allow_outside_paths)
        if reason:
            rejected[reason] += 1
            continue
        identity = hashlib.blake2b(data if isinstance(data, bytes) else data.tobytes(), digest_size=16).hexdigest()
        if (product_id, identity) in seen:
            rejected["duplicate"] += 1
            continue
        seen.add((product_id, identity))
        try:
            image = to_rgb_image(data, f"{where} ({product_id})")
        except ValueError:  # corrupt, truncated, a decompression bomb: unreadable
            rejected["unreadable_image"] += 1
            continue
        fmt = image_format
        if fmt == "auto":
            fmt = "png" if isinstance(data, bytes) and data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
        encoded, width, height = encode_image(image, image_size, fmt)
        fields = {"title": title, "category": _text(row, "category", where)}
        product = products.setdefault(product_id, {"product_id": product_id, **fields, "images": []})
        for field, value in fields.items():  # the first row's value is kept; another one is counted
            if value and product[field] and value != product[field]:
                conflicts[field]["rows"] += 1
                conflicting[field].add(product_id)
            product[field] = product[field] or value
        product["images"].append(
            {
                "image": encoded,
                "source": _text(row, "source", where) or DEFAULT_SOURCE,
                "kind": kind,
                # The format needs the product's own box first; without annotations that is the whole image.
                "boxes": [[0.0, 0.0, float(width), float(height)]],
                "box_product_ids": [product_id],
            }
        )
    kept = {pid: product for pid, product in products.items() if len(product["images"]) >= 2}
    for product in kept.values():
        product["category"] = product["category"] or DEFAULT_CATEGORY
    # A product needs two images to form a positive pair; its lone row is rejected (after the other reasons).
    rejected["single_image_product"] += sum(len(p["images"]) for pid, p in products.items() if pid not in kept)
    for field, ids in conflicting.items():
        conflicts[field]["products"] = len(ids)
        conflicts[field]["examples"] = sorted(ids)[:MAX_CONFLICT_EXAMPLES]
    report = {
        "input_rows": num_rows,
        "accepted_rows": num_rows - sum(rejected.values()),
        "rejected_rows": dict(rejected),
        "conflicts": conflicts,
        "splits": {},
    }
    if not kept:
        reasons = ", ".join(f"{count} {reason}" for reason, count in rejected.items() if count) or "no rows"
        raise CatalogueError(
            f"{catalogue}: no product has two usable images, nothing to write ({num_rows} rows: {reasons}). "
            f"The rows need {', '.join(REQUIRED_COLUMNS)}; image paths are read relative to {root}.",
            report,
        )
    if test_fraction is not None:
        splits = assign_splits(list(kept), test_fraction, seed)
    else:
        splits = dict.fromkeys(kept, split)
    with replacing_output_folder(output, overwrite) as staging:
        for name in sorted(set(splits.values())):
            with ShardWriter(staging, name) as writer:
                for pid in sorted(kept):  # sorted: the same catalogue always gives the same shards
                    if splits[pid] == name:
                        writer.write(kept[pid])
            report["splits"][name] = {"products": writer.num_rows, "shards": len(writer.paths)}
        (staging / "rejections.json").write_text(json.dumps(report, indent=2) + "\n")
        write_dataset_card(
            staging,
            pretty_name=pretty_name or output.resolve().name,
            description=description or _default_description(catalogue, report),
            license=license,
            license_name=license_name,
            license_link=license_link,
        )
    return report


def _default_description(catalogue: str | os.PathLike, report: dict[str, Any]) -> str:
    """The card's body when no description is given: the source, the splits and the rejections."""
    splits = ", ".join(f"{name}: {split['products']} products" for name, split in report["splits"].items())
    rejected = sum(report["rejected_rows"].values())
    return (
        f"Product catalogue converted from `{Path(catalogue).name}` by `python -m modeling_eclip.data.convert` "
        f"(ECLIP for transformers): {splits}, from {report['accepted_rows']} of {report['input_rows']} rows. "
        f"{rejected} rows were rejected; `rejections.json` counts them by reason.\n\n"
        "One row per product: `product_id`, `title`, `category` and `images`, each with `image`, `source`, `kind` "
        "(catalog, customer or ad) and `boxes` (the product's own box first)."
    )


def format_report(report: dict[str, Any]) -> str:
    """The report as a markdown table."""
    lines = ["| rows | count |", "| --- | ---: |", f"| input | {report['input_rows']} |"]
    lines += [f"| rejected: {reason} | {count} |" for reason, count in report["rejected_rows"].items()]
    lines.append(f"| accepted | {report['accepted_rows']} |")
    lines += [
        f"| accepted with another {field} than the product's first row (products) | {c['rows']} ({c['products']}) |"
        for field, c in report["conflicts"].items()
        if c["rows"]
    ]
    lines += [
        f"| {name}: products (shards) | {c['products']} ({c['shards']}) |" for name, c in report["splits"].items()
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("catalogue", help="a .jsonl or .csv catalogue, or a datasets folder saved with save_to_disk")
    parser.add_argument(
        "--output", required=True,
        help="output catalogue folder (data/<split>-NNNNN-of-MMMMM.parquet, README.md, rejections.json)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output (built beside it)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--split", default="train", choices=SPLITS, help="split of every product (default train)")
    group.add_argument("--test-fraction", type=float, help="put this fraction (0..1) of the products in test")
    parser.add_argument("--seed", type=int, default=0, help="seed of --test-fraction (default 0)")
    parser.add_argument("--image-size", type=int, help="resize every image to NxN (as the processor would)")
    parser.add_argument(
        "--image-format", default="auto", choices=("auto", "png", "jpeg"), help="stored encoding (auto: keep PNG)"
    )
    parser.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="read image paths outside the catalogue's folder too (absolute, '..', symbolic links): trusted input only",
    )
    card = parser.add_argument_group("dataset card (README.md)")
    card.add_argument(
        "--license", default="other",
        help="licence of the data: a Hub licence id (https://hf.co/docs/hub/repositories-licenses), e.g. cc-by-4.0; "
        "default other",
    )  # fmt: skip
    card.add_argument("--license-name", default="", help="with --license other: an id for your licence")
    card.add_argument("--license-link", default="", help="with --license other: its file in the repository, or a URL")
    card.add_argument("--pretty-name", default=None, help="the dataset's display name (default: the output's name)")
    card.add_argument("--description", default=None, help="the card's text (default: source, splits, rejections)")
    add_push_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_options(args.test_fraction, args.image_size, args.seed)
        check_card_licence(args.license, args.license_name, args.license_link)
        check_repo_id(args.push_to_hub)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None, hub_api: Any = None) -> int:
    """Run the conversion, print the report and push with ``--push_to_hub`` (``hub_api``: the ``HfApi``, tests pass a
    stand-in); exit status 2 with a message when nothing was converted."""
    args = parse_args(argv)

    def conversion() -> dict:
        return convert(
            args.catalogue,
            args.output,
            split=args.split,
            test_fraction=args.test_fraction,
            seed=args.seed,
            image_size=args.image_size,
            image_format=args.image_format,
            overwrite=args.overwrite,
            allow_outside_paths=args.allow_outside_paths,
            license=args.license,
            license_name=args.license_name,
            license_link=args.license_link,
            pretty_name=args.pretty_name,
            description=args.description,
        )

    def rejections(error: Exception) -> str | None:  # what was rejected, before the error that ends the conversion
        return format_report(error.report) if isinstance(error, CatalogueError) and error.report else None

    return run_build_command(
        conversion,
        (ValueError, FileExistsError, FileNotFoundError),  # CatalogueError is a ValueError
        lambda report, _: format_report(report),
        push=(args.output, args),
        hub_api=hub_api,
        error_details=rejections,
    )


if __name__ == "__main__":
    sys.exit(main())
