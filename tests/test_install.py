# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""A non-editable install works without the checkout: `pip install --no-deps --target DIR <repository>`, then, from a
working directory outside the checkout with only DIR added to the path, the package's command lines build a tiny demo
catalogue and pretrain a tiny model by preset and recipe name (the presets ship as package data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DEMO_CATALOGUE, MINILM_DIR, REPO, TINY_BATCH, can_build_catalogue

# eclip-tiny made tiny: one-layer towers at 32 px, D = 16, a one-block decoder with 4 queries.
TINY_OVERRIDES = {
    "vision_config": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 32,
        "patch_size": 8,
    },
    "text_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "projection_dim": 16,
    "decoder_config": {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_queries": 4,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    },
    "queue_size": 2 * TINY_BATCH,
}
# What the checkout holds besides the source (see .gitignore): a build from it must not see any of it.
NOT_SOURCE_AT_THE_TOP = {".git", ".venv", "data", "outputs", "build", "dist"}
NOT_SOURCE_ANYWHERE = shutil.ignore_patterns("*.egg-info", "__pycache__", ".*_cache")


def not_source(folder: str, names: list[str]) -> set[str]:
    top = NOT_SOURCE_AT_THE_TOP & set(names) if Path(folder) == REPO else set()
    return top | NOT_SOURCE_ANYWHERE(folder, names)


def run(command: list[str], cwd: Path, site: Path) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


@pytest.mark.slow
def test_a_non_editable_install_builds_the_demo_catalogue_and_pretrains_by_preset_name(tmp_path: Path) -> None:
    if not can_build_catalogue():
        pytest.skip("needs Unicode's emoji-test.txt and emoji artwork")
    # The checkout's files (not its build outputs, which a build in place would reuse), installed non-editable with the
    # setuptools of this environment (no download).
    source = shutil.copytree(REPO, tmp_path / "repository", ignore=not_source)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(source)], check=True, capture_output=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()

    modules = ("modeling_eclip", "modeling_eclip.presets", "modeling_eclip.training", "modeling_eclip.data")
    where = f"import importlib; print(*(importlib.import_module(name).__file__ for name in {modules}))"
    for path in run([sys.executable, "-c", where], work, site).split():
        assert Path(path).is_relative_to(site), path

    options = {"seed": 0, "image-size": DEMO_CATALOGUE["image_size"], "max-products": 20, "workers": 1}
    flags = [item for name, value in options.items() for item in (f"--{name}", str(value))]
    run([sys.executable, "-m", "modeling_eclip.demo.catalogue", "--output", "demo", *flags], work, site)
    assert list((work / "demo" / "data").glob("train-*.parquet")) and (work / "demo" / "README.md").is_file()

    arguments = {
        "config": "recipe-demo",  # a shipped recipe, by name; its model_config is the preset eclip-tiny
        "model_config": "eclip-tiny",
        "config_overrides": json.dumps(TINY_OVERRIDES),
        "text_model_name_or_path": "none",
        "vision_model_name_or_path": "none",  # the recipe's pretrained tower is built by `make demo`, not here
        "tokenizer_name_or_path": MINILM_DIR,
        "dataset_name": "demo",
        "output_dir": "out",
        "per_device_train_batch_size": TINY_BATCH,
        "max_steps": 2,
        "warmup_steps": 1,
        "instance_objectives_start_step": 1,
        "save_steps": 0,
        "logging_steps": 1,
        "num_workers": 0,
        "mixed_precision": "no",
        "report_to": "none",
        "evaluate_at_end": False,
    }
    flags = [item for name, value in arguments.items() for item in (f"--{name}", str(value))]
    printed = run([sys.executable, "-m", "modeling_eclip.training", *flags], work, site)
    assert "exported the model after 2 steps" in printed
    summary = json.loads((work / "out" / "train_summary.json").read_text())
    assert summary["step"] == 2 and summary["stop_reason"] == "max_steps"
    exported = json.loads((work / "out" / "model" / "config.json").read_text())
    assert exported["projection_dim"] == 16 and exported["vision_config"]["image_size"] == 32
