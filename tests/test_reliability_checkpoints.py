# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Issue 28 for what a run leaves on disk: every file of a checkpoint is checksummed (an edited step counter is a
damaged checkpoint, not a resume at another step), a checkpoint folder linked from elsewhere is rotated without a
crash, a resume pointed at something that is no checkpoint is named, and an output folder swapped in by a builder is
the old or the new one after a hard kill between its two renames."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets.config
import pytest
from helpers import tiny_run_arguments

from modeling_eclip.training import parse_arguments, pretrain
from modeling_eclip.training.checkpoints import remove_run_files

MAX_STEPS = 4


@pytest.fixture(autouse=True)
def _no_parquet_shutdown_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def _arguments(model_config: Path, data: Path, output: Path, **flags) -> list[str]:
    values = {"max_steps": MAX_STEPS, "save_steps": 2, "save_total_limit": 2, "evaluate_at_end": False, **flags}
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


# ----------------------------------------------------------------------------------------------- linked checkpoints


def test_a_checkpoint_linked_from_outside_the_run_is_rotated_without_following_the_link(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    output = _copy(finished_run, tmp_path)
    elsewhere = tmp_path / "other-disk" / "checkpoint-4"
    elsewhere.parent.mkdir()
    shutil.move(output / "checkpoint-4", elsewhere)
    (output / "checkpoint-4").symlink_to(elsewhere, target_is_directory=True)
    # Before: rotation at step 6 died with "Cannot call rmtree on a symbolic link", and no export was written.
    result = pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume="latest", max_steps=8)))
    assert result.step == 8 and (output / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in output.iterdir() if p.name.startswith(("checkpoint-", "tmp-"))) == [
        "checkpoint-6",
        "checkpoint-8",
    ]
    assert (elsewhere / "model.safetensors").is_file(), "rotation deleted what the link points to"


def test_overwriting_a_run_removes_a_linked_checkpoint_but_not_its_target(tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-disk" / "checkpoint-2"
    elsewhere.mkdir(parents=True)
    (elsewhere / "model.safetensors").write_bytes(b"weights")
    output = tmp_path / "out"
    output.mkdir()
    (output / "checkpoint-2").symlink_to(elsewhere, target_is_directory=True)
    (output / "tmp-checkpoint-4").mkdir()
    assert remove_run_files(output, ["metrics.jsonl"]) == ["checkpoint-2", "tmp-checkpoint-4"]
    assert not list(output.iterdir()) and (elsewhere / "model.safetensors").read_bytes() == b"weights"
