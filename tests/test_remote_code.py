# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Auto classes and remote code: a saved checkpoint loads with `trust_remote_code=True` where the package is not
importable."""

import json
import os
import sys
import textwrap

import pytest
import torch
import transformers
from helpers import make_processor, run_without_package, tiny_model
from helpers import tiny_pixel_values as pixels
from PIL import Image

from modeling_eclip import EclipConfig, EclipModel, EclipProcessor

CODE_FILES = ("configuration_eclip.py", "modeling_eclip.py", "processing_eclip.py")


def _relative_imports(path):
    """Sibling modules imported as `from .name import ...`."""
    names = set()
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("from .") and " import " in stripped:
            names.add(stripped[len("from .") :].split(" ", 1)[0])
    return names


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """A tiny model and processor saved together, with test inputs and the expected outputs."""
    directory = tmp_path_factory.mktemp("eclip_checkpoint")
    model = tiny_model()
    processor = make_processor()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)

    image = Image.new("RGB", (48, 32), (255, 0, 0))
    image.paste((0, 0, 255), (24, 0, 48, 32))
    image.save(directory / "image.png")
    texts = ["red shoe", "a blue cotton t-shirt with a round neck"]
    features = dict(processor(images=[image, image.transpose(Image.FLIP_LEFT_RIGHT)], text=texts))
    inputs = {**features, "prompt_pixel_values": pixels(2, seed=4)}
    with torch.no_grad():
        output = model(**inputs)
        text_only = model(input_ids=features["input_ids"], attention_mask=features["attention_mask"])
    expected = {
        "inputs": inputs,
        "texts": texts,
        "features": features,
        "outputs": {key: output[key] for key in ("image_embeds", "text_embeds", "instance_embeds", "grounding_maps")},
        "text_only": text_only.text_embeds,
    }
    torch.save(expected, directory / "expected.pt")
    return directory


def test_auto_classes_load_the_local_package(saved_checkpoint):
    model = transformers.AutoModel.from_pretrained(saved_checkpoint)
    assert isinstance(model, EclipModel)
    assert isinstance(transformers.AutoConfig.from_pretrained(saved_checkpoint), EclipConfig)
    assert isinstance(transformers.AutoProcessor.from_pretrained(saved_checkpoint), EclipProcessor)
    expected = torch.load(saved_checkpoint / "expected.pt")
    with torch.no_grad():
        output = model(**expected["inputs"])
    for key, value in expected["outputs"].items():
        torch.testing.assert_close(output[key], value, atol=1e-6, rtol=0, msg=key)


def test_save_pretrained_writes_auto_map_and_copies_the_code(saved_checkpoint):
    config = json.loads((saved_checkpoint / "config.json").read_text())
    assert config["model_type"] == "eclip"
    assert config["auto_map"]["AutoConfig"] == "configuration_eclip.EclipConfig"
    assert config["auto_map"]["AutoModel"] == "modeling_eclip.EclipModel"
    processor_config = json.loads((saved_checkpoint / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_eclip.EclipProcessor"

    package = os.path.dirname(sys.modules["modeling_eclip"].__file__)
    pending, needed = list(CODE_FILES), set()
    while pending:  # the entry files and, recursively, every sibling they import
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        pending.extend(f"{module}.py" for module in _relative_imports(saved_checkpoint / name))
    assert set(CODE_FILES) <= needed
    for name in needed:
        copied = saved_checkpoint / name
        assert copied.is_file(), f"{name} was not copied next to the checkpoint"
        with open(os.path.join(package, name)) as source:
            assert copied.read_text() == source.read(), name


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys

    import torch
    import transformers
    from PIL import Image

    directory = sys.argv[1]
    expected = torch.load(f"{directory}/expected.pt")

    config = transformers.AutoConfig.from_pretrained(directory, trust_remote_code=True)
    assert config.model_type == "eclip", config.model_type
    assert type(config).__module__.startswith("transformers_modules"), type(config).__module__
    assert config.decoder_config.num_queries == 4

    model = transformers.AutoModel.from_pretrained(directory, trust_remote_code=True)
    assert type(model).__name__ == "EclipModel", type(model)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert not model.training

    processor = transformers.AutoProcessor.from_pretrained(directory, trust_remote_code=True)
    assert type(processor).__name__ == "EclipProcessor", type(processor)
    image = Image.open(f"{directory}/image.png")
    features = processor(images=[image, image.transpose(Image.FLIP_LEFT_RIGHT)], text=expected["texts"])
    for key, value in expected["features"].items():
        assert torch.equal(features[key], value), key

    with torch.no_grad():
        output = model(**expected["inputs"])
        text_only = model(input_ids=features["input_ids"], attention_mask=features["attention_mask"])
    for key, value in expected["outputs"].items():
        torch.testing.assert_close(output[key], value, atol=1e-6, rtol=0, msg=key)
    torch.testing.assert_close(text_only.text_embeds, expected["text_only"], atol=1e-6, rtol=0)
    """
)


@pytest.mark.slow
def test_remote_code_loads_without_the_package(saved_checkpoint, tmp_path):
    run_without_package(REMOTE_SCRIPT, saved_checkpoint, tmp_path)
    modules = list((tmp_path / "modules").rglob("modeling_eclip.py"))
    assert modules, "the remote code was not loaded from HF_MODULES_CACHE"
