# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Helpers of the pretraining-script tests: a tiny catalogue, a tiny model config and the command-line arguments of a
tiny pretraining run (a few seconds per run on one core)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import MINILM_DIR, tiny_config

from modeling_eclip.data import demo_catalogue, demo_products

REPO = Path(__file__).resolve().parent.parent

PRETRAIN_SCRIPT = REPO / "examples" / "pretrain.py"
TINY_BATCH = 4
TINY_QUEUE = 16
CHECKPOINT_FILES = {
    "trainer_state.json",
    "model.safetensors",
    "optimizer.bin",
    "custom_checkpoint_0.pkl",  # the learning-rate schedule
    "random_states_0.pkl",
    "stream_state_rank0.json",
}
# What an export holds, whatever launched the run.
EXPORT_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "configuration_eclip.py",
    "modeling_eclip.py",
    "processing_eclip.py",
}
LOSS_KEYS = ("loss", "loss_itc", "loss_inter", "loss_itm", "loss_intra", "loss_entropy", "temperature", "learning_rate")


def can_build_catalogue() -> bool:
    return demo_products.find_emoji_test() is not None and bool(demo_catalogue.discover_sources())


def build_tiny_catalogue(root: Path) -> Path:
    """24 products at 32 px (20 train, 4 test)."""
    demo_catalogue.build_catalogue(root, seed=0, image_size=32, max_products=24, workers=1)
    return root


def write_tiny_model_config(path: Path, **overrides) -> Path:
    tiny_config(queue_size=TINY_QUEUE, **overrides).to_json_file(path)
    return path


def tiny_run_arguments(config_file: Path, data: Path, output: Path, **overrides) -> list[str]:
    """Flags of a tiny run: random towers (MiniLM vocabulary), batch 4, no tracker, no decode processes; keyword
    arguments override any flag."""
    values = {
        "model_config": config_file,
        "text_model_name_or_path": "none",
        "tokenizer_name_or_path": MINILM_DIR,
        "data_dir": data,
        "output_dir": output,
        "per_device_train_batch_size": TINY_BATCH,
        "max_steps": 8,
        "warmup_steps": 2,
        "learning_rate": 1e-3,
        "save_steps": 2,
        "save_total_limit": 2,
        "logging_steps": 1,
        "num_workers": 0,
        "report_to": "none",
        "mixed_precision": "no",
        "evaluate_at_end": False,
        "seed": 0,
        **overrides,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def start_pretraining(arguments: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PRETRAIN_SCRIPT), *arguments],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_metrics(output_dir: Path) -> dict[int, dict]:
    """The last logged values of every step in `metrics.jsonl` (a resumed run logs the replayed steps again)."""
    path = output_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    by_step = {}
    for line in path.read_text().splitlines(keepends=True):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by SIGKILL (the trainer closes it and starts a new one)
            continue
        by_step[entry["step"]] = entry
    return by_step
