# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Reliability of the product data that training and evaluation read (issue 28): image paths resolve against the
dataset, never the working directory; a dataset's files are checked before the model is built; image files have a
size cap; a catalogue of unusable products fails early; every kind of bad image is skipped and counted."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
from pathlib import Path

import bad_inputs
import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import TINY_BATCH, make_processor, tiny_run_arguments

from modeling_eclip import EclipForPreTraining, processing_eclip
from modeling_eclip.data.preflight import DataFileError
from modeling_eclip.data.source import CatalogueColumns, CatalogueSource, resolve_image_path
from modeling_eclip.data.stream import ProductPairStream, UnusableCatalogueError, load_product_stream
from modeling_eclip.processing_eclip import to_rgb_image
from modeling_eclip.training import parse_arguments, pretrain


@pytest.fixture(autouse=True)
def _no_stream_shutdown_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def write_csv_dataset(folder: Path, products: int = 12, images: list[list[str]] | None = None) -> Path:
    """``folder/cat.csv``, one image per row, its ``images`` column holding paths relative to ``folder``: two pictures
    per product (``images/N.png``, written there), or the given cells per product (of which only the pictures named
    ``images/ok-*.png`` are written)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    if images is None:
        images = [[f"images/{2 * product + i}.png" for i in range(2)] for product in range(products)]
        pictures = [cell for cells in images for cell in cells]
    else:
        pictures = [cell for cells in images for cell in cells if cell.startswith("images/ok-")]
    for seed, picture in enumerate(pictures):
        (folder / picture).write_bytes(bad_inputs.valid_png(seed))
    rows = [
        {"product_id": f"p{product}", "title": f"thing {product}", "images": cell}
        for product, cells in enumerate(images)
        for cell in cells
    ]
    path = folder / "cat.csv"
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["product_id", "title", "images"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def stream_of(source: CatalogueSource, **kwargs) -> ProductPairStream:
    options = {"batch_size": TINY_BATCH, "num_workers": 0, "drop_last": False, **kwargs}
    return ProductPairStream(load_product_stream(source, shuffle_buffer=0), make_processor(), **options)


# ------------------------------------------------------------------------------------------------ image paths
def test_relative_image_paths_resolve_against_the_data_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_csv_dataset(tmp_path / "shop")
    # Run from a folder that happens to hold files of the same names (other pictures, or none that decode).
    decoy = tmp_path / "elsewhere"
    (decoy / "images").mkdir(parents=True)
    for number in range(24):
        (decoy / "images" / f"{number}.png").write_bytes(b"not the catalogue's picture")
    monkeypatch.chdir(decoy)
    source = CatalogueSource("csv", data_files={"train": str(data)})
    paths = [image["path"] for product in source.iter_products("train") for image in product["images"]]
    assert paths == [str(tmp_path / "shop" / "images" / f"{number}.png") for number in range(24)]
    stream = stream_of(source)
    assert len(list(stream)) == 3
    assert stream.counters["skipped_corrupt_images"] == 0


def test_each_data_file_resolves_the_paths_of_its_own_rows(tmp_path: Path) -> None:
    first, second = write_csv_dataset(tmp_path / "a", products=3), write_csv_dataset(tmp_path / "b", products=3)
    source = CatalogueSource("csv", data_files={"train": [str(first), str(second)]})
    folders = [Path(image["path"]).parents[1].name for row in source.iter_products("train") for image in row["images"]]
    assert folders == ["a"] * 6 + ["b"] * 6


def test_a_local_dataset_folder_resolves_image_paths_against_its_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``Image`` column that holds paths rather than bytes (``{"bytes": None, "path": ...}``)."""
    root = tmp_path / "shop"
    (root / "images").mkdir(parents=True)
    names = [f"images/{number}.png" for number in range(4)]
    for seed, name in enumerate(names):
        (root / name).write_bytes(bad_inputs.valid_png(seed))
    features = datasets.Features(
        {"sku": datasets.Value("string"), "name": datasets.Value("string"), "photo": datasets.Image()}
    )
    columns = {
        "sku": ["p0", "p0", "p1", "p1"],
        "name": ["thing"] * 4,
        "photo": [{"bytes": None, "path": n} for n in names],
    }
    pq.write_table(pa.table(columns, schema=features.arrow_schema), root / "train.parquet")
    monkeypatch.chdir(tmp_path)
    source = CatalogueSource(str(root), columns=CatalogueColumns(product_id="sku", title="name", image="photo"))
    paths = [image["path"] for product in source.iter_products("train") for image in product["images"]]
    assert paths == [str(root / name) for name in names]


@pytest.mark.parametrize(
    ("value", "folder", "expected"),
    [
        ("images/1.png", "/data/shop", "/data/shop/images/1.png"),
        ("../pictures/1.png", "/data/shop", "/data/shop/../pictures/1.png"),  # the OS resolves it, symlinks included
        ("/srv/images/1.png", "/data/shop", "/srv/images/1.png"),
        ("https://example.com/1.png", "/data/shop", "https://example.com/1.png"),
        ("data:image/png;base64,iVBORw0KGgo=", "/data/shop", "data:image/png;base64,iVBORw0KGgo="),
        ("images/1.png", "hf://datasets/org/shop@abc/data", "hf://datasets/org/shop@abc/data/images/1.png"),
        ("images/1.png", None, None),  # no folder known: never the working directory
        (None, "/data/shop", None),
        ("", "/data/shop", None),
        ("  ", "/data/shop", None),
    ],
)
def test_the_one_image_path_rule(value: str | None, folder: str | None, expected: str | None) -> None:
    assert resolve_image_path(value, folder) == expected


def test_a_base64_string_in_a_path_column_stays_base64(tmp_path: Path) -> None:
    encoded = __import__("base64").b64encode(bad_inputs.valid_png(0)).decode()
    assert resolve_image_path(encoded, str(tmp_path)) == encoded
    (tmp_path / "abcd").write_bytes(bad_inputs.valid_png(0))  # a file of that name wins, as in `to_rgb_image`
    assert resolve_image_path("abcd", str(tmp_path)) == str(tmp_path / "abcd")


def test_pretraining_trains_on_the_datasets_pictures_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_config: Path
) -> None:
    data = write_csv_dataset(tmp_path / "shop")
    monkeypatch.chdir(tmp_path)  # no images/ here
    flags = {"max_steps": 2, "warmup_steps": 1, "save_steps": 0, "image_column": "images"}
    arguments = tiny_run_arguments(model_config, "csv", tmp_path / "run", **flags)
    result = pretrain(parse_arguments([*arguments, "--dataset_data_files", f"train={data}"]))
    assert result.step == 2


# ---------------------------------------------------------------------------------------- the dataset's files
@pytest.fixture
def two_files(demo_catalogue: Path, tmp_path: Path) -> Path:
    """The demo catalogue with its train split in two files."""
    root = tmp_path / "shop"
    shutil.copytree(demo_catalogue, root)
    path = root / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    path.unlink()
    half = len(table) // 2
    pq.write_table(table.slice(0, half), root / "data" / "train-00000-of-00002.parquet", row_group_size=8)
    pq.write_table(table.slice(half), root / "data" / "train-00001-of-00002.parquet", row_group_size=8)
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("which", ["00000", "00001"])
@pytest.mark.parametrize("card", [True, False], ids=["card", "no-card"])
def test_a_truncated_data_file_is_named_before_any_row_is_read(two_files: Path, which: str, card: bool) -> None:
    if not card:  # the features then come from the first file's schema
        for name in ("README.md", "dataset_info.json"):
            (two_files / name).unlink(missing_ok=True)
    bad = two_files / "data" / f"train-{which}-of-00002.parquet"
    truncate(bad)
    with pytest.raises(DataFileError, match=rf"{bad}.*not a readable parquet file.*truncated"):
        CatalogueSource(str(two_files)).layout("train")


def test_a_stray_data_file_with_other_columns_is_named(two_files: Path) -> None:
    stray = two_files / "data" / "train-extra.parquet"
    pq.write_table(pa.table({"sku": ["a"], "note": ["b"]}), stray)
    with pytest.raises(DataFileError, match=rf"{stray} has the columns \['sku', 'note'\].*product_id"):
        CatalogueSource(str(two_files)).layout("train")


def test_split_files_deleted_while_the_card_lists_them_are_named(two_files: Path) -> None:
    for path in (two_files / "data").glob("test-*.parquet"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"README\.md lists data/test-\* for the split 'test'.*matches no file"):
        CatalogueSource(str(two_files)).layout("train")


@pytest.mark.parametrize("second", [False, True], ids=["only-glob", "one-of-two"])
def test_a_data_files_glob_that_matches_nothing_is_named(demo_catalogue: Path, tmp_path: Path, second: bool) -> None:
    nothing = str(tmp_path / "nowhere" / "train-*.parquet")
    patterns = [str(demo_catalogue / "data" / "train-*.parquet"), nothing] if second else [nothing]
    source = CatalogueSource("parquet", data_files={"train": patterns})
    with pytest.raises(FileNotFoundError, match=rf"train={re.escape(nothing)} .*matches no file"):
        source.layout("train")


def test_pretraining_refuses_a_truncated_data_file_before_the_model_is_built(
    two_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_config: Path
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the dataset's files were checked")

    monkeypatch.setattr(EclipForPreTraining, "__init__", no_model)
    truncate(two_files / "data" / "train-00001-of-00002.parquet")
    with pytest.raises(DataFileError, match="train-00001-of-00002.parquet"):
        pretrain(parse_arguments(tiny_run_arguments(model_config, two_files, tmp_path / "run")))


# ------------------------------------------------------------------------------------------ image file sizes
def padded_png(extra: int) -> bytes:
    """A valid PNG followed by ``extra`` bytes (decoders stop at its end, so the file decodes at any size)."""
    return bad_inputs.valid_png(0) + b"\0" * extra


def test_an_image_file_over_the_cap_is_refused_naming_the_file_and_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(padded_png(10_000))
    monkeypatch.setattr(processing_eclip, "MAX_IMAGE_FILE_BYTES", 8_000)
    with pytest.raises(ValueError, match=rf"{path}.*bytes, over the cap of 8000 .*MAX_IMAGE_FILE_BYTES"):
        to_rgb_image(str(path), "images[0]")
    assert to_rgb_image(str(path), max_file_bytes=20_000).size == (24, 24)
    with pytest.raises(ValueError, match="over the cap of 100"):
        to_rgb_image(str(path), max_file_bytes=100)


def test_a_fifo_or_a_folder_is_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("the decoder waited on a FIFO")))
    signal.alarm(10)
    try:
        with pytest.raises(ValueError, match="not a regular file"):
            to_rgb_image(str(fifo))
    finally:
        signal.alarm(0)
    with pytest.raises(ValueError, match="a folder, not an image file"):
        to_rgb_image(str(tmp_path / "folder.png"))
    with pytest.raises(ValueError, match="empty"):
        to_rgb_image(str(tmp_path / "empty.png"))


BAD_IMAGE_CELLS = {
    "missing_cell": "",
    "missing_file": "images/nowhere.png",
    "folder": "images/folder.png",
    "empty_file": "images/empty.png",
    "fifo": "images/fifo.png",
    "not_an_image": "images/text.png",
    "oversized": "images/huge.png",
    "unreachable_url": "http://127.0.0.1:9/image.png",
    "outside_the_folder": "../elsewhere.png",
}


def test_every_kind_of_bad_image_in_a_local_dataset_is_skipped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "shop"
    (folder / "images" / "folder.png").mkdir(parents=True)
    (folder / "images" / "empty.png").write_bytes(b"")
    os.mkfifo(folder / "images" / "fifo.png")
    (folder / "images" / "text.png").write_text("hello")
    (folder / "images" / "huge.png").write_bytes(padded_png(10_000))
    (tmp_path / "elsewhere.png").write_bytes(b"a file outside the dataset that is no image")
    monkeypatch.setattr(processing_eclip, "MAX_IMAGE_FILE_BYTES", 8_000)
    good = [[f"images/ok-{2 * n}.png", f"images/ok-{2 * n + 1}.png"] for n in range(TINY_BATCH)]
    bad = [[f"images/ok-bad-{n}.png", cell] for n, cell in enumerate(BAD_IMAGE_CELLS.values())]
    data = write_csv_dataset(folder, images=good + bad)
    monkeypatch.chdir(tmp_path)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("the stream waited on a FIFO")))
    signal.alarm(60)
    try:
        stream = stream_of(CatalogueSource("csv", data_files={"train": str(data)}))
        batches = list(stream)
    finally:
        signal.alarm(0)
    assert len(batches) == 1
    assert stream.counters["skipped_single_image_products"] == len(BAD_IMAGE_CELLS)
    assert stream.counters["skipped_corrupt_images"] == len(BAD_IMAGE_CELLS)


# ------------------------------------------------------------------------------------- unusable catalogues
def test_a_catalogue_of_unusable_products_fails_after_the_first_products(tmp_path: Path) -> None:
    cells = [[f"images/missing-{n}a.png", f"images/missing-{n}b.png"] for n in range(40)]
    data = write_csv_dataset(tmp_path / "shop", images=cells)
    stream = stream_of(CatalogueSource("csv", data_files={"train": str(data)}), unusable_products_limit=10)
    with pytest.raises(UnusableCatalogueError) as error:
        list(stream)
    message = str(error.value)
    assert "the first 10 products" in message and "10 with fewer than two readable images" in message
    assert str(tmp_path / "shop" / "images" / "missing-") in message  # the first decoding error, with its file
    assert stream.counters["skipped_single_image_products"] == 10  # stopped there, not after all 40


def test_a_catalogue_whose_first_products_are_unusable_still_trains(tmp_path: Path) -> None:
    bad = [[f"images/missing-{n}.png"] for n in range(9)]
    good = [[f"images/ok-{2 * n}.png", f"images/ok-{2 * n + 1}.png"] for n in range(8)]
    data = write_csv_dataset(tmp_path / "shop", images=bad + good)
    stream = stream_of(CatalogueSource("csv", data_files={"train": str(data)}), unusable_products_limit=10)
    assert len(list(stream)) == 2
    assert stream.counters["skipped_single_image_products"] == 9
    # A catalogue smaller than the limit is judged after its pass, as before (the training loop's EmptyEpochError).
    data = write_csv_dataset(tmp_path / "small", images=bad)
    stream = stream_of(CatalogueSource("csv", data_files={"train": str(data)}), unusable_products_limit=10)
    assert list(stream) == [] and stream.last_epoch["products"] == 9


def test_pretraining_stops_early_on_a_catalogue_of_unusable_products(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_config: Path
) -> None:
    from modeling_eclip.data import stream as stream_module

    monkeypatch.setattr(stream_module, "UNUSABLE_PRODUCTS_LIMIT", 20)
    cells = [[f"images/missing-{n}.png", ""] for n in range(60)]
    data = write_csv_dataset(tmp_path / "shop", images=cells)
    arguments = tiny_run_arguments(model_config, "csv", tmp_path / "run", image_column="images", warmup_steps=1)
    with pytest.raises(UnusableCatalogueError, match="the first 20 products"):
        pretrain(parse_arguments([*arguments, "--dataset_data_files", f"train={data}"]))
