# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Issues 13 and 28 for what a run keeps on disk: nothing in a checkpoint runs code when loaded; every file of a
checkpoint is checksummed (an edited step counter is a damaged checkpoint, not a resume at another step); a damaged
checkpoint is named, and `--resume latest` takes the newest intact one; changed settings are refused or applied, never
ignored; a second run never mixes with the first; a checkpoint folder linked from elsewhere is rotated without a crash;
a resume pointed at something that is no checkpoint is named; and an output folder swapped in by a builder is the old
or the new one after a hard kill between its two renames."""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LOGGED_KEYS, read_metrics, subprocess_env, tiny_run_arguments, write_tiny_model_config

from modeling_eclip.data import output_folder
from modeling_eclip.training import check_arguments, parse_arguments, pretrain
from modeling_eclip.training.checkpoints import (
    CHECKPOINT_MANIFEST,
    MANIFEST_KEY,
    TRAINER_STATE,
    CheckpointError,
    _file_entry,
    remove_run_files,
    verify_checkpoint,
)

MAX_STEPS = 4


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
    manifest = json.loads((checkpoint / CHECKPOINT_MANIFEST).read_text())
    manifest[MANIFEST_KEY] = {name: _file_entry(checkpoint / name) for name in manifest[MANIFEST_KEY]}
    (checkpoint / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))


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
    manifest = json.loads((finished_run / "checkpoint-4" / CHECKPOINT_MANIFEST).read_text())
    assert set(manifest[MANIFEST_KEY]) == files - {CHECKPOINT_MANIFEST} and TRAINER_STATE in files


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
        ("no_trainer_state", "no intact checkpoint.*checkpoint-4 is damaged \\(trainer_state.json is missing\\)"),
        ("bad_json", "no intact checkpoint.*checkpoint-4 is damaged \\(trainer_state.json has 9 bytes"),
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


def test_a_foreign_trainer_state_is_refused(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    output = _copy(finished_run, tmp_path)
    checkpoint = output / "checkpoint-4"
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    (checkpoint / TRAINER_STATE).write_text(json.dumps({**state, "learning_rate_override": 1.0}))
    _rewrite_manifest(checkpoint)  # the whole checkpoint rewritten, so its loader is what refuses the key
    with pytest.raises(CheckpointError, match="trainer_state.json has unknown keys \\['learning_rate_override'\\]"):
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
    result = pretrain(
        parse_arguments(
            _arguments(model_config, demo_catalogue, output, resume="latest", max_steps=8, save_total_limit=2)
        )
    )
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


# ----------------------------------------------------------------------------------------------- the manifest


def _edit_step(checkpoint: Path, step: int) -> None:
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    (checkpoint / TRAINER_STATE).write_text(json.dumps({**state, "step": step}, indent=2, sort_keys=True))


def test_an_edited_step_counter_is_a_damaged_checkpoint(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = _copy(finished_run, tmp_path)
    _edit_step(output / "checkpoint-4", 3)  # same size: only the checksum tells
    # Before: "resumed from .../checkpoint-4 at step 3", with the data position and schedule of step 4.
    named = _arguments(model_config, demo_catalogue, output, resume=str(output / "checkpoint-4"))
    with pytest.raises(CheckpointError, match="checkpoint-4 is damaged \\(trainer_state.json differs from what was"):
        pretrain(parse_arguments(named))
    result = pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume="latest")))
    log = capsys.readouterr().out
    assert "checkpoint-4 is damaged (trainer_state.json differs" in log and "resumed from" in log
    assert f"{output / 'checkpoint-2'} at step 2" in log and result.step == MAX_STEPS


def _damage(checkpoint: Path, damage: str) -> None:
    if damage == "missing_weights":
        (checkpoint / "model.safetensors").unlink()
    elif damage == "truncated_weights":
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "no_manifest":
        (checkpoint / CHECKPOINT_MANIFEST).unlink()
    elif damage == "older_version":  # the manifest inside trainer_state.json, which it did not cover
        manifest = json.loads((checkpoint / CHECKPOINT_MANIFEST).read_text())
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
        (checkpoint / TRAINER_STATE).write_text(json.dumps({**state, MANIFEST_KEY: manifest[MANIFEST_KEY]}))
        (checkpoint / CHECKPOINT_MANIFEST).unlink()
    elif damage == "manifest_without_trainer_state":
        manifest = json.loads((checkpoint / CHECKPOINT_MANIFEST).read_text())
        del manifest[MANIFEST_KEY][TRAINER_STATE]
        (checkpoint / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    elif damage == "added_in_a_subfolder":
        (checkpoint / "pytorch_model_fsdp_0").mkdir()
        (checkpoint / "pytorch_model_fsdp_0" / "__0_0.distcp").write_bytes(b"x")
    elif damage == "manifest_not_json":
        (checkpoint / CHECKPOINT_MANIFEST).write_text("{")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("missing_weights", "model.safetensors is missing"),
        ("truncated_weights", "model.safetensors has 100 bytes, \\d+ were saved"),
        ("no_manifest", "no checkpoint_manifest.json$"),
        ("older_version", "no checkpoint_manifest.json: written by an older version, which did not checksum"),
        ("manifest_without_trainer_state", "checkpoint_manifest.json does not list .* \\(trainer_state.json among"),
        ("added_in_a_subfolder", "not saved with it: \\['pytorch_model_fsdp_0/__0_0.distcp'\\]"),
        ("manifest_not_json", "checkpoint_manifest.json is unreadable"),
    ],
)
def test_every_kind_of_damage_is_named(finished_run: Path, tmp_path: Path, damage: str, problem: str) -> None:
    checkpoint = tmp_path / "checkpoint-4"
    shutil.copytree(finished_run / "checkpoint-4", checkpoint)
    assert verify_checkpoint(checkpoint) is None
    _damage(checkpoint, damage)
    assert re.search(problem, verify_checkpoint(checkpoint)), verify_checkpoint(checkpoint)


@pytest.mark.parametrize(
    ("value", "message"),
    [('"3"', "step is '3', which no run saves"), ("-1", "samples is -1"), ("null", "train_seconds is None")],
)
def test_a_trainer_state_of_another_kind_is_refused_even_with_a_rewritten_manifest(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path, value: str, message: str
) -> None:
    output = _copy(finished_run, tmp_path)
    checkpoint = output / "checkpoint-4"
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    name = message.split(" is ")[0]
    (checkpoint / TRAINER_STATE).write_text(json.dumps({**state, name: json.loads(value)}))
    manifest = json.loads((checkpoint / CHECKPOINT_MANIFEST).read_text())
    manifest[MANIFEST_KEY][TRAINER_STATE] = _file_entry(checkpoint / TRAINER_STATE)
    (checkpoint / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=f"trainer_state.json: {re.escape(message)}"):
        pretrain(parse_arguments(_arguments(model_config, demo_catalogue, output, resume=str(checkpoint))))


def test_a_resume_at_something_that_is_no_checkpoint_is_named(
    finished_run: Path, model_config: Path, demo_catalogue: Path, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = {
        finished_run: "it is a run's output_dir holding checkpoint-2, checkpoint-4: pass one of them",
        tmp_path / "empty": "no checkpoint_manifest.json",
        tmp_path / "notes.txt": "it is not a folder",
        tmp_path / "missing": "it does not exist",
    }
    for resume, reason in cases.items():
        args = parse_arguments(_arguments(model_config, demo_catalogue, tmp_path / "new", resume=str(resume)))
        with pytest.raises(FileNotFoundError, match=f"is not a complete checkpoint \\({re.escape(reason)}"):
            check_arguments(args)


# ----------------------------------------------------------------------------------------------- output folders

# A build that SIGKILLs itself right after its `kill_after`-th rename of the swap (argv: output, kill_after, the
# module's file, loaded alone: it needs only the standard library, and the package takes seconds to import).
KILLED_BUILD = r"""
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("output_folder", sys.argv[3])
output_folder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(output_folder)

renames, kill_after = [0], int(sys.argv[2])
real_rename = os.rename

def rename_then_die(source, target):
    real_rename(source, target)
    renames[0] += 1
    if renames[0] == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

output_folder.os.rename = rename_then_die
with output_folder.replacing_output_folder(sys.argv[1], overwrite=True) as staging:
    (staging / "build.txt").write_text("new")
"""


@pytest.mark.parametrize("kill_after", [1, 2, 3])
def test_a_hard_kill_during_the_output_swap_is_finished_by_the_next_build(
    tmp_path: Path, kill_after: int, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp_path / "catalogue"
    output.mkdir()
    (output / "build.txt").write_text("old")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(output), str(kill_after), output_folder.__file__],
        env=subprocess_env(),
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    # Before: a kill after the old output was moved aside left no output at all, and the old build hidden beside it.
    with caplog.at_level(logging.WARNING, logger=output_folder.__name__):
        output_folder.check_output_folder(output, overwrite=True)
    assert (output / "build.txt").read_text() == "new", "the finished build was not put in place"
    assert "was killed while swapping it in" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalogue"]
    with output_folder.replacing_output_folder(output, overwrite=True) as staging:
        (staging / "build.txt").write_text("newer")
    assert (output / "build.txt").read_text() == "newer"


def test_an_old_output_moved_aside_with_no_finished_build_goes_back(tmp_path: Path) -> None:
    aside = tmp_path / ".catalogue.old-123-abcd"
    aside.mkdir()
    (aside / "build.txt").write_text("old")
    message = output_folder.finish_interrupted_swap(tmp_path / "catalogue")
    assert "the earlier output it had moved aside was put back" in message
    assert (tmp_path / "catalogue" / "build.txt").read_text() == "old" and not aside.exists()
    assert output_folder.finish_interrupted_swap(tmp_path / "catalogue") is None
