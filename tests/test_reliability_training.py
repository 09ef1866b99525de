# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Issue 13 for training and evaluation: nothing in a checkpoint runs code when loaded, damaged or foreign checkpoints
are named (and the newest intact one used), a run never spins on an epoch without a batch, the export survives a
failing evaluation, a second run never mixes with the first, evaluation decodes and skips images as training does, and
every numeric argument is checked."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import datasets.config
import pytest
from bad_inputs import WHITE, exif_rotated_jpeg, png_bomb, transparent_rgba_png, truncated_jpeg
from helpers import (
    LOGGED_KEYS,
    TINY_BATCH,
    read_metrics,
    subprocess_env,
    tiny_run_arguments,
    write_tiny_model_config,
)
from PIL import Image

from modeling_eclip.data import shard_format as sf
from modeling_eclip.data.source import read_split
from modeling_eclip.evaluation import cli as evaluation_cli
from modeling_eclip.evaluation.embedding import load_catalogue_split
from modeling_eclip.evaluation.tables import quick_evaluate
from modeling_eclip.processing_eclip import to_rgb_image
from modeling_eclip.training import check_arguments, parse_arguments, pretrain
from modeling_eclip.training import loop as training_loop
from modeling_eclip.training import run as training_run
from modeling_eclip.training.checkpoints import (
    MANIFEST_KEY,
    TRAINER_STATE,
    CheckpointError,
    _file_entry,
    verify_checkpoint,
)
from modeling_eclip.training.image_tower import ImageTowerArguments, drop_unreadable_images

MAX_STEPS = 4


@pytest.fixture(autouse=True)
def _no_parquet_shutdown_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def _arguments(model_config: Path, data: Path, output: Path, **flags) -> list[str]:
    values = {"max_steps": MAX_STEPS, "save_steps": 2, "save_total_limit": 3, "evaluate_at_end": False, **flags}
    return tiny_run_arguments(model_config, data, output, **values)


@pytest.fixture(scope="module")
def finished_run(model_config: Path, demo_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run of 4 steps with checkpoint-2 and checkpoint-4 (read-only: tests copy it)."""
    output = tmp_path_factory.mktemp("run") / "out"
    pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output)))
    return output


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(run, copy)
    return copy


def _rewrite_manifest(checkpoint: Path) -> None:
    """What an attacker who controls the whole checkpoint does: record the sizes and digests of the files as they
    are now, so the manifest check passes and only the loaders stand between the files and the process."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    state[MANIFEST_KEY] = {name: _file_entry(checkpoint / name) for name in state[MANIFEST_KEY]}
    (checkpoint / TRAINER_STATE).write_text(json.dumps(state))


class _RunsCode:
    """A pickle that, when loaded without `weights_only`, writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


# ----------------------------------------------------------------------------------------------- security


def test_a_crafted_pickle_in_a_checkpoint_never_runs(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    output = _copy(finished_run, tmp_path)
    checkpoint = output / "checkpoint-4"
    marker = tmp_path / "marker"
    # The files Accelerate itself reads with weights_only=False (a registered object's state) or swallows errors of:
    # refused, because the checkpoint was not saved with them.
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (checkpoint / name).write_bytes(pickle.dumps(_RunsCode(marker)))
    args = parse_arguments(_arguments(model_config, demo_catalogue, output, resume=str(checkpoint)))
    with pytest.raises(CheckpointError, match="files that were not saved with it: \\['custom_checkpoint_0.pkl'"):
        pretrain(args)
    assert not marker.exists(), "a pickle in the checkpoint ran code at resume"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (checkpoint / name).unlink()

    # The optimiser state is a torch file: with a crafted one, resume refuses (weights_only) instead of running it.
    torch_file = tmp_path / "optimizer.bin"
    import torch

    torch.save({"state": _RunsCode(marker)}, torch_file)
    shutil.copy(torch_file, checkpoint / "optimizer.bin")
    _rewrite_manifest(checkpoint)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume=str(checkpoint))))
    assert not marker.exists(), "the optimiser state ran code at resume"


def test_a_checkpoint_holds_no_pickle_outside_the_weights_only_optimizer(finished_run: Path) -> None:
    files = {p.name for p in (finished_run / "checkpoint-4").iterdir()}
    assert not {name for name in files if name.endswith(".pkl")}, files
    state = json.loads((finished_run / "checkpoint-4" / TRAINER_STATE).read_text())
    assert set(state[MANIFEST_KEY]) == files - {TRAINER_STATE}


# ----------------------------------------------------------------------------------------------- damaged checkpoints


def test_a_truncated_latest_checkpoint_falls_back_to_the_newest_intact_one(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = _copy(finished_run, tmp_path)
    weights = output / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume="latest")))
    log = capsys.readouterr().out
    assert "checkpoint-4 is damaged (model.safetensors has" in log and "resuming from checkpoint-2" in log
    assert result.step == MAX_STEPS
    # Exact from checkpoint-2, and metrics.jsonl holds one line per step (the replayed steps replace the old ones).
    reference, resumed = read_metrics(finished_run), read_metrics(output)
    for step in range(1, MAX_STEPS + 1):
        assert all(resumed[step][key] == reference[step][key] for key in LOGGED_KEYS), step
    steps = [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, MAX_STEPS + 1))
    # The damaged checkpoint was replaced by the new step 4.
    assert json.loads((output / "checkpoint-4" / TRAINER_STATE).read_text())["step"] == MAX_STEPS
    assert verify_checkpoint(output / "checkpoint-4") is None


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_trainer_state", "no intact checkpoint.*checkpoint-4 is damaged \\(no trainer_state.json\\)"),
        ("bad_json", "no intact checkpoint.*trainer_state.json is unreadable"),
    ],
)
def test_resume_latest_never_starts_over_when_every_checkpoint_is_damaged(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path, damage: str, message: str
) -> None:
    output = _copy(finished_run, tmp_path)
    for checkpoint in output.glob("checkpoint-*"):
        if damage == "no_trainer_state":
            (checkpoint / TRAINER_STATE).unlink()
        else:
            (checkpoint / TRAINER_STATE).write_text('{"step": ')
    with pytest.raises(CheckpointError, match=message):
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume="latest")))
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_a_damaged_checkpoint_named_explicitly_is_an_error(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    output = _copy(finished_run, tmp_path)
    (output / "checkpoint-4" / "optimizer.bin").write_bytes(b"")
    path = output / "checkpoint-4"
    with pytest.raises(CheckpointError, match="checkpoint-4 is damaged \\(optimizer.bin has 0 bytes"):
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume=str(path))))


@pytest.mark.parametrize("content", ["{}", '{"python": [3, [1, 2], null], "numpy": [], "torch": []}', "not json"])
def test_an_unreadable_rng_state_is_an_error(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path, content: str
) -> None:
    output = _copy(finished_run, tmp_path)
    checkpoint = output / "checkpoint-4"
    (checkpoint / "rng_state_rank0.json").write_text(content)
    _rewrite_manifest(checkpoint)
    with pytest.raises(CheckpointError, match="the RNG state .*rng_state_rank0.json is missing or unreadable"):
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume=str(checkpoint))))


def test_a_missing_stream_state_is_named_as_missing(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    output = _copy(finished_run, tmp_path)
    (output / "checkpoint-4" / "stream_state_rank0.json").unlink()
    with pytest.raises(CheckpointError, match="stream_state_rank0.json is missing") as raised:
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume=output / "checkpoint-4")))
    assert "fewer processes" not in str(raised.value)


def test_a_tampered_schedule_state_is_refused(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    output = _copy(finished_run, tmp_path)
    checkpoint = output / "checkpoint-4"
    state = json.loads((checkpoint / "scheduler_state.json").read_text())
    (checkpoint / "scheduler_state.json").write_text(json.dumps({**state, "optimizer": "not a schedule key"}))
    _rewrite_manifest(checkpoint)
    with pytest.raises(CheckpointError, match="the schedule state .* is unreadable"):
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume=str(checkpoint))))


# ----------------------------------------------------------------------------------------------- changed settings


def test_changed_learning_rate_on_resume_is_refused_and_max_steps_applied(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = _copy(finished_run, tmp_path)
    flags = {"resume": "latest", "learning_rate": 5e-4, "shuffle_buffer": 3}
    with pytest.raises(CheckpointError, match="shuffle_buffer: 1000 -> 3; learning_rate: 0.001 -> 0.0005") as raised:
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, **flags)))
    assert "max_steps" not in str(raised.value)
    result = pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume="latest", max_steps=6)))
    assert "applied from the resumed step on: max_steps: 4 -> 6" in capsys.readouterr().out
    assert result.step == 6 and sorted(read_metrics(output)) == list(range(1, 7))


def test_a_changed_model_config_on_resume_is_refused(finished_run: Path, demo_catalogue: Path, tmp_path: Path) -> None:
    output = _copy(finished_run, tmp_path)
    other = write_tiny_model_config(tmp_path / "other.json", itm_loss_weight=0.5)
    with pytest.raises(CheckpointError, match="the model config \\(fields \\['itm_loss_weight'\\]\\)"):
        pretrain(parse_arguments(_arguments(other, demo_catalogue, output, resume="latest")))


# ----------------------------------------------------------------------------------------------- output_dir reuse


def test_a_second_run_into_a_used_output_dir_is_refused_without_overwrite(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    output = _copy(finished_run, tmp_path)
    with pytest.raises(FileExistsError, match="is not empty .*--resume latest.*--overwrite_output_dir"):
        check_arguments(parse_arguments(_arguments(model_config, demo_catalogue, output)))
    (output / "notes.txt").write_text("the user's own file")
    result = pretrain(
        parse_arguments(
            _arguments(model_config, demo_catalogue, output, max_steps=2, warmup_steps=1, overwrite_output_dir=True)
        )
    )
    assert result.step == 2
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2"]
    assert sorted(read_metrics(output)) == [1, 2]
    assert (output / "notes.txt").is_file()


def test_resuming_an_older_checkpoint_refuses_to_mix_with_later_ones(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    output = _copy(finished_run, tmp_path)
    older = str(output / "checkpoint-2")
    with pytest.raises(CheckpointError, match="holds later checkpoints \\(checkpoint-4\\)"):
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume=older, max_steps=3)))
    result = pretrain(
        parse_arguments(
            _arguments(model_config, demo_catalogue, output, resume=older, max_steps=3, overwrite_output_dir=True)
        )
    )
    assert result.step == 3
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert sorted(read_metrics(output)) == [1, 2, 3]


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


def test_a_foreign_trainer_state_is_refused(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    output = _copy(finished_run, tmp_path)
    checkpoint = output / "checkpoint-4"
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    (checkpoint / TRAINER_STATE).write_text(json.dumps({**state, "learning_rate_override": 1.0}))
    with pytest.raises(CheckpointError, match="has unknown keys \\['learning_rate_override'\\]"):
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume=str(checkpoint))))


def test_rng_states_round_trip_with_cuda_generators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA part of the JSON RNG state, with stand-in CUDA generators (no GPU here): saved per device, restored,
    and a checkpoint from another number of devices is an error rather than a resume that draws other numbers."""
    import random

    import torch

    from modeling_eclip.training.checkpoints import load_rng_state, rng_state, write_json

    devices = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: devices)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    random.seed(1)
    write_json(tmp_path / "rng.json", rng_state())
    expected = random.random()
    random.seed(2)
    load_rng_state(tmp_path / "rng.json")
    assert random.random() == expected
    assert [t.tolist() for t in restored] == [t.tolist() for t in devices]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CheckpointError, match="it holds 2 CUDA generator\\(s\\), this process has 1"):
        load_rng_state(tmp_path / "rng.json")
