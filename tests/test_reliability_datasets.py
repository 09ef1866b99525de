# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Reliability of the product data that training and evaluation read (issue 28): a dataset's files are checked before
the model is built; image files have a size cap and only regular files are read."""

from __future__ import annotations

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
from helpers import tiny_run_arguments

from modeling_eclip import EclipForPreTraining, processing_eclip
from modeling_eclip.data.preflight import DataFileError
from modeling_eclip.data.source import CatalogueSource
from modeling_eclip.processing_eclip import to_rgb_image
from modeling_eclip.training import parse_arguments, pretrain


@pytest.fixture(autouse=True)
def _no_stream_shutdown_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


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
