# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Issue 13 for training and evaluation: a run never spins on an epoch without a batch, the export survives a failing
evaluation, evaluation decodes and skips images as training does, and every numeric argument is checked. What a run
keeps on disk (checkpoints, output folders) is tested in `test_reliability_checkpoints.py`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import datasets.config
import pytest
from bad_inputs import WHITE, exif_rotated_jpeg, png_bomb, transparent_rgba_png, truncated_jpeg
from helpers import TINY_BATCH, subprocess_env, tiny_run_arguments
from PIL import Image

from modeling_eclip.data import shard_format as sf
from modeling_eclip.data.source import read_split
from modeling_eclip.evaluation import cli as evaluation_cli
from modeling_eclip.evaluation.embedding import load_catalogue_split
from modeling_eclip.evaluation.tables import quick_evaluate
from modeling_eclip.processing_eclip import to_rgb_image
from modeling_eclip.training import loop as training_loop
from modeling_eclip.training import parse_arguments, pretrain
from modeling_eclip.training import run as training_run
from modeling_eclip.training.image_tower import ImageTowerArguments
from modeling_eclip.training.image_tower_data import drop_unreadable_images, image_source, load_tower_data

MAX_STEPS = 4


@pytest.fixture(autouse=True)
def _no_parquet_shutdown_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def _arguments(model_config: Path, data: Path, output: Path, **flags) -> list[str]:
    values = {"max_steps": MAX_STEPS, "save_steps": 2, "save_total_limit": 3, "evaluate_at_end": False, **flags}
    return tiny_run_arguments(model_config, data, output, **values)


# ----------------------------------------------------------------------------------------------- never hang


def _write_catalogue(root: Path, rows: list[dict], splits: tuple[str, ...] = ("train",)) -> Path:
    for split in splits:
        with sf.ShardWriter(root, split) as writer:
            for row in rows:
                writer.write({**row, "split": split})
    return root


@pytest.mark.slow
def test_an_epoch_without_a_full_batch_stops_with_the_counts(
    model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    # Enough products, but every one has a single readable image: no pair, no batch, ever.
    rows = read_split(demo_catalogue, "train")[: 2 * TINY_BATCH]
    for row in rows:
        row["images"] = [row["images"][0], {**row["images"][1], "image": truncated_jpeg()}]
    data = _write_catalogue(tmp_path / "catalogue", rows)
    arguments = _arguments(model_config, data, tmp_path / "out", max_train_minutes=0.5, num_workers=0)
    process = subprocess.run(
        [sys.executable, "-m", "modeling_eclip.training", *arguments],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=240,  # before the fix: spins forever
    )
    assert process.returncode != 0
    assert "EmptyEpochError: epoch 0 of the train split gave no full batch" in process.stderr
    assert f"{2 * TINY_BATCH} products read, {2 * TINY_BATCH} of them skipped" in process.stderr
    assert f"({2 * TINY_BATCH} unreadable images), 0 with a blank title, 0 without a product id, 0 usable" in (
        process.stderr
    )


def test_too_few_products_for_one_batch_fail_before_the_model_is_built(
    model_config: Path, demo_catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = read_split(demo_catalogue, "train")[: TINY_BATCH - 1]
    data = _write_catalogue(tmp_path / "catalogue", rows, ("train", "test"))
    monkeypatch.setattr(training_run, "build_model_and_processor", pytest.fail)
    with pytest.raises(ValueError, match=f"has {TINY_BATCH - 1} products; one batch needs {TINY_BATCH}"):
        pretrain(parse_arguments(_arguments(model_config, data, tmp_path / "out")))


def test_a_missing_eval_split_fails_before_training(
    model_config: Path, demo_catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _write_catalogue(tmp_path / "catalogue", read_split(demo_catalogue, "train"))
    monkeypatch.setattr(training_run, "build_model_and_processor", pytest.fail)
    with pytest.raises(FileNotFoundError, match="eval_split 'test': dataset .* has no such split"):
        pretrain(parse_arguments(_arguments(model_config, data, tmp_path / "out", evaluate_at_end=True)))


def test_the_export_is_written_before_a_failing_evaluation(
    model_config: Path, demo_catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_evaluation(run):
        raise OSError("disk gone")

    monkeypatch.setattr(training_loop, "quick_evaluation", failing_evaluation)
    output = tmp_path / "out"
    with pytest.raises(RuntimeError, match="evaluation on split 'test' failed .*disk gone.*model was exported to"):
        pretrain(
            parse_arguments(
                _arguments(model_config, demo_catalogue, output, max_steps=2, warmup_steps=1, evaluate_at_end=True)
            )
        )
    assert (output / "model" / "model.safetensors").is_file() and (output / "model" / "README.md").is_file()
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["evaluation_error"] == "OSError: disk gone"


# ----------------------------------------------------------------------------------------------- evaluation images


def test_evaluation_decodes_like_training_and_skips_unreadable_images(
    model, processor, demo_catalogue: Path, tmp_path: Path
) -> None:
    rows = read_split(demo_catalogue, "test")
    customer = next(i for i, image in enumerate(rows[0]["images"]) if image["kind"] == "customer")
    rows[0]["images"][customer]["image"] = png_bomb()
    rows[1]["images"][0]["image"] = truncated_jpeg()
    rows[2]["images"][0]["image"] = transparent_rgba_png()
    data = _write_catalogue(tmp_path / "catalogue", rows, ("test",))

    split = load_catalogue_split(data, "test")
    assert split.unreadable_images == [f"{rows[0]['product_id']} image {customer}", f"{rows[1]['product_id']} image 0"]
    transparent = next(image for image in split.images if image.name == f"{rows[2]['product_id']} image 0")
    decoded = transparent.to_pil()
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == WHITE  # on white, as training decodes it
    assert list(decoded.getdata()) == list(to_rgb_image(rows[2]["images"][0]["image"]).getdata())

    metrics = quick_evaluate(model, processor, data, batch_size=8, diagnostic_images=4)
    assert metrics["skipped_unreadable_images"] == 2


def test_evaluation_applies_exif_orientation(tmp_path: Path) -> None:
    from modeling_eclip.evaluation.embedding import CatalogueImage

    image = CatalogueImage(0, "s", "catalog", exif_rotated_jpeg(), [], [])
    assert image.to_pil().size == (20, 40)  # upright, not as stored (40 x 20)


def test_image_tower_skips_and_counts_unreadable_images() -> None:
    good = Image.new("RGB", (8, 8), (10, 20, 30))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    split = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": png_bomb(), "path": None}, good, {"bytes": truncated_jpeg(), "path": None}],
            "label": [0, 1, 0],
        },
        features=features,
    )
    data, unreadable = drop_unreadable_images(datasets.DatasetDict({"train": split, "validation": split.select([1])}))
    assert unreadable == {"train": 2, "validation": 0}
    assert data["train"]["label"] == [1]


def test_image_tower_reads_relative_image_paths_from_the_data_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tower dataset storing paths (no bytes) relative to its data files reads them from there, as every dataset
    path is read (`resolve_image_path`); a same-named file in the working directory is never used."""
    dataset = tmp_path / "tower"
    (dataset / "data" / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(dataset / "data" / "images" / "a.png")
    features = datasets.Features(
        {"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=["a", "b"])}
    )
    Image.new("RGB", (8, 8)).save(dataset / "data" / "images" / "missing.png")  # removed once the split is written
    monkeypatch.chdir(dataset / "data")  # datasets sizes the files while writing; the paths stay relative
    for split, paths in (("train", ["images/a.png", "images/missing.png"]), ("validation", ["images/a.png"])):
        rows = {"image": [{"bytes": None, "path": path} for path in paths], "label": [0] * len(paths)}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(dataset / "data" / f"{split}.parquet"))
    (dataset / "data" / "images" / "missing.png").unlink()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(elsewhere / "images" / "missing.png")  # would be read from the working directory
    monkeypatch.chdir(elsewhere)
    tower = load_tower_data(str(dataset))
    assert tower.image_folders["train"] == str(dataset / "data")
    assert tower.unreadable == {"train": 1, "validation": 0}
    image = tower.data["train"][0]["image"]
    assert to_rgb_image(image_source(image, tower.image_folders["train"])).getpixel((0, 0)) == (10, 20, 30)


# ----------------------------------------------------------------------------------------------- numeric arguments


# The recipe's numeric fields: `test_training_tools.test_bad_settings_fail_before_compute`.


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("seed", -1, "seed must be >= 0"), ("dataloader_num_workers", -2, "dataloader_num_workers must be >= 0")],
)
def test_numeric_image_tower_arguments_are_checked(field: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageTowerArguments(dataset="d", output_dir="o", **{field: value})


@pytest.mark.parametrize("flag", ["--batch-size", "--max-products", "--new-scenes-max-products"])
@pytest.mark.parametrize("value", ["0", "-2", "x"])
def test_numeric_evaluation_arguments_are_checked(flag: str, value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        evaluation_cli.parse_args(["--model", "m", "--data", "d", flag, value])
    assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "value"), [("max_products", 0), ("max_products", -1), ("batch_size", 0)])
def test_evaluation_api_checks_its_numbers(model, processor, demo_catalogue: Path, name: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {value}"):
        quick_evaluate(model, processor, demo_catalogue, **{name: value})


def test_the_stream_checks_its_numbers(processor, demo_catalogue: Path) -> None:
    from modeling_eclip.data.stream import ProductPairStream, load_product_stream

    with pytest.raises(ValueError, match="shuffle_buffer must be an integer >= 0"):
        load_product_stream(demo_catalogue, shuffle_buffer=-1)  # before: silently no shuffling
    rows = load_product_stream(demo_catalogue)
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        ProductPairStream(rows, processor, batch_size=4, num_workers=-1)
