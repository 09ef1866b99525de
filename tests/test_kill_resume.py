# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Kill test: SIGKILL the pretraining script at random steps, resume with `--resume latest` each time, and get the loss
trajectory of an uninterrupted run with the same seed (CPU, deterministic); no checkpoint is ever incomplete."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
from helpers import (
    CHECKPOINT_FILES,
    LOGGED_KEYS,
    read_metrics,
    start_pretraining,
    tiny_run_arguments,
    write_tiny_model_config,
)
from safetensors import safe_open

from modeling_eclip.training import parse_arguments, pretrain

MAX_STEPS = 12
KILLS = 3


def assert_checkpoints_complete(output_dir: Path) -> list[int]:
    """Every `checkpoint-N` directory holds the whole state; returns their steps."""
    steps = []
    for path in sorted(output_dir.glob("checkpoint-*")):
        files = {p.name for p in path.iterdir()}
        assert files >= CHECKPOINT_FILES, f"{path.name} is incomplete: missing {CHECKPOINT_FILES - files}"
        state = json.loads((path / "trainer_state.json").read_text())
        assert state["step"] == int(path.name.removeprefix("checkpoint-"))
        with safe_open(path / "model.safetensors", "pt") as weights:
            keys = set(weights.keys())
        assert "queue_embeds" in keys and any(key.startswith("momentum_eclip.") for key in keys)
        steps.append(state["step"])
    return steps


@pytest.mark.slow
def test_sigkill_and_resume_reproduces_the_uninterrupted_run(demo_catalogue: Path, tmp_path: Path) -> None:
    data = demo_catalogue
    model_config = write_tiny_model_config(tmp_path / "tiny.json")

    # Augmentation, the shuffle buffer, dropout-free random draws of the objectives: all must replay exactly.
    reference_dir = tmp_path / "reference"
    flags = {"max_steps": MAX_STEPS, "shuffle_buffer": 8, "augment": True}
    pretrain(parse_arguments(tiny_run_arguments(model_config, data, reference_dir, **flags)))
    reference = read_metrics(reference_dir)
    assert sorted(reference) == list(range(1, MAX_STEPS + 1))

    output_dir = tmp_path / "killed"
    arguments = tiny_run_arguments(model_config, data, output_dir, resume="latest", **flags)
    rng = random.Random(0)
    kill_after = sorted(rng.sample(range(2, MAX_STEPS - 1), KILLS))
    resumed_from = []
    for target in kill_after:
        process = start_pretraining(arguments)
        deadline = time.monotonic() + 120
        while max(read_metrics(output_dir), default=0) < target:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the run did not reach the kill step in time"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # land anywhere: mid-step, mid-checkpoint, mid-log
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        resumed_from.append(max(assert_checkpoints_complete(output_dir), default=0))
    process = start_pretraining(arguments)
    log, _ = process.communicate(timeout=180)
    assert process.returncode == 0, log
    assert "resumed from" in log
    assert assert_checkpoints_complete(output_dir)[-1] == MAX_STEPS
    assert any(step > 0 for step in resumed_from), "no kill happened after a checkpoint"

    resumed = read_metrics(output_dir)
    assert sorted(resumed) == sorted(reference)
    for step, expected in reference.items():
        for key in LOGGED_KEYS:
            assert resumed[step][key] == expected[key], f"step {step}: {key} differs after kill and resume"
