# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of `EclipProcessor`: outputs, sizes, text length, serialisation and robust image decoding."""

import io
import json
import pathlib
import re

import numpy as np
import pytest
import torch
from bad_inputs import BAD_IMAGE_FILES, write_files
from helpers import TINY_IMAGE_SIZE
from PIL import Image
from transformers import AutoProcessor, BatchFeature

from modeling_eclip import EclipProcessor
from modeling_eclip.processing_eclip import DEFAULT_MAX_TEXT_LENGTH

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
# ViT normalisation (mean = std = 0.5): 0 -> -1, 255 -> 1.
RED_PIXEL, GREEN_PIXEL, BLUE_PIXEL = [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]
WHITE_PIXEL, BLACK_PIXEL = [1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]


def pixel(features, row=0, column=0, index=0, key="pixel_values"):
    return features[key][index, :, row, column].tolist()


def assert_pixel(actual, expected, atol=0.02):
    assert actual == pytest.approx(expected, abs=atol)


def striped_image(width=96, height=32):
    """Red, green and blue vertical thirds."""
    image = Image.new("RGB", (width, height), RED)
    image.paste(GREEN, (width // 3, 0, 2 * width // 3, height))
    image.paste(BLUE, (2 * width // 3, 0, width, height))
    return image


# ----- outputs -----


def test_returns_batch_feature_with_every_input(processor):
    texts = ["red shoe", "a blue cotton t-shirt with a round neck"]
    images = [striped_image(), Image.new("RGB", (20, 50), GREEN)]
    features = processor(images=images, text=texts, prompt_images=[Image.new("RGB", (40, 40), BLUE)] * 2)
    assert isinstance(features, BatchFeature)
    assert features["pixel_values"].shape == (2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert features["pixel_values"].dtype == torch.float32
    assert features["prompt_pixel_values"].shape == (2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert_pixel(pixel(features, key="prompt_pixel_values"), BLUE_PIXEL)
    assert features["input_ids"].shape[0] == 2
    assert features["attention_mask"].shape == features["input_ids"].shape
    assert features["attention_mask"][0].sum() < features["attention_mask"][1].sum()  # padded to the longest
    assert features["input_ids"][0, 0].item() == processor.tokenizer.cls_token_id
    expected = processor.tokenizer(texts, padding=True, return_tensors="pt")
    assert torch.equal(features["input_ids"], expected["input_ids"])
    assert {"input_ids", "attention_mask", "pixel_values", "prompt_pixel_values"} <= set(processor.model_input_names)


def test_single_inputs_and_modalities_alone(processor):
    text_only = processor(text="red shoe")
    assert "pixel_values" not in text_only and text_only["input_ids"].shape[0] == 1
    image_only = processor(images=Image.new("RGB", (10, 10), RED))
    assert "input_ids" not in image_only
    assert image_only["pixel_values"].shape == (1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert_pixel(pixel(image_only), RED_PIXEL)
    with pytest.raises(ValueError, match="at least one"):
        processor()
    with pytest.raises(ValueError, match="text"):
        processor(text=["fine", 3])


def test_non_square_image_is_resized_whole_without_centre_crop(processor):
    features = processor(images=striped_image(width=96, height=32))
    assert features["pixel_values"].shape == (1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    last = TINY_IMAGE_SIZE - 1
    for row in (0, TINY_IMAGE_SIZE // 2, last):
        assert_pixel(pixel(features, row, 0), RED_PIXEL)  # a centre crop would drop the red third
        assert_pixel(pixel(features, row, TINY_IMAGE_SIZE // 2), GREEN_PIXEL)
        assert_pixel(pixel(features, row, last), BLUE_PIXEL)
    tall = processor(images=striped_image(width=96, height=32).rotate(90, expand=True))
    assert_pixel(pixel(tall, 0, TINY_IMAGE_SIZE // 2), BLUE_PIXEL)
    assert_pixel(pixel(tall, last, TINY_IMAGE_SIZE // 2), RED_PIXEL)


def test_text_max_length_is_55_by_default(processor):
    assert DEFAULT_MAX_TEXT_LENGTH == 55
    long_text = " ".join(["word"] * 200)
    features = processor(text=[long_text, "short"])
    assert features["input_ids"].shape == (2, 55)
    assert features["input_ids"][0, -1].item() == processor.tokenizer.sep_token_id
    assert features["attention_mask"][0].all()
    short = processor(text=["red shoe"])
    assert short["input_ids"].shape[1] < 55  # padded to the longest, not to 55
    overridden = processor(text=[long_text], max_length=10)
    assert overridden["input_ids"].shape == (1, 10)


# ----- serialisation -----


def test_save_load_round_trip(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "EclipProcessor"
    assert config["auto_map"]["AutoProcessor"].endswith("EclipProcessor")

    inputs = {
        "images": [striped_image(), Image.new("RGB", (30, 20), GREEN)],
        "text": ["red shoe", "a blue cotton t-shirt"],
        "prompt_images": [Image.new("RGB", (12, 12), BLUE)] * 2,
    }
    expected = processor(**inputs)
    for loaded in (EclipProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded).__name__ == "EclipProcessor"
        assert (loaded.image_processor.size.height, loaded.image_processor.size.width) == (32, 32)
        assert loaded.tokenizer.vocab_size == processor.tokenizer.vocab_size
        actual = loaded(**inputs)
        assert actual.keys() == expected.keys()
        for key in expected:
            assert torch.equal(actual[key], expected[key]), key


# ----- image decoding -----


def _saved(tmp_path, image, name, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_grayscale_images_become_rgb(processor, tmp_path):
    gray = Image.new("L", (16, 16), 255)
    assert_pixel(pixel(processor(images=gray)), WHITE_PIXEL)
    path = _saved(tmp_path, Image.new("L", (16, 16), 0), "gray.png")
    assert_pixel(pixel(processor(images=path)), BLACK_PIXEL)
    mid = processor(images=Image.new("L", (16, 16), 128))
    assert_pixel(pixel(mid), [128 / 127.5 - 1] * 3)
    gray_alpha = Image.new("LA", (16, 16), (0, 255))
    assert_pixel(pixel(processor(images=gray_alpha)), BLACK_PIXEL)


def test_rgba_images_are_composited_on_white(processor, tmp_path):
    transparent = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    assert_pixel(pixel(processor(images=transparent)), WHITE_PIXEL)
    opaque = _saved(tmp_path, Image.new("RGBA", (16, 16), (0, 0, 255, 255)), "opaque.png")
    assert_pixel(pixel(processor(images=opaque)), BLUE_PIXEL)
    half = processor(images=Image.new("RGBA", (16, 16), (0, 0, 0, 128)))
    assert_pixel(pixel(half), [(127 / 127.5) - 1] * 3, atol=0.03)


def test_palette_images_become_rgb(processor, tmp_path):
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    assert_pixel(pixel(processor(images=palette)), GREEN_PIXEL)
    path = _saved(tmp_path, palette, "palette.png")
    assert Image.open(path).mode == "P"
    assert_pixel(pixel(processor(images=path)), GREEN_PIXEL)
    transparent = Image.new("P", (16, 16), 0)
    transparent.putpalette([255, 0, 0] * 256)
    transparent.info["transparency"] = 0
    path = _saved(tmp_path, transparent, "transparent.png", transparency=0)
    assert_pixel(pixel(processor(images=path)), WHITE_PIXEL)


def test_cmyk_images_become_rgb(processor, tmp_path):
    red_cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    assert_pixel(pixel(processor(images=red_cmyk)), RED_PIXEL)
    assert_pixel(pixel(processor(images=Image.new("CMYK", (16, 16), (0, 0, 0, 0)))), WHITE_PIXEL)
    path = _saved(tmp_path, red_cmyk, "red_cmyk.jpg", quality=100)
    assert Image.open(path).mode == "CMYK"
    assert_pixel(pixel(processor(images=path)), RED_PIXEL, atol=0.05)


def test_16_bit_images_become_rgb(processor, tmp_path):
    white = _saved(tmp_path, Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)), "white16.png")
    assert Image.open(white).mode.startswith("I;16")
    assert_pixel(pixel(processor(images=white)), WHITE_PIXEL)
    black = _saved(tmp_path, Image.fromarray(np.zeros((16, 16), dtype=np.uint16)), "black16.png")
    assert_pixel(pixel(processor(images=black)), BLACK_PIXEL)
    half = processor(images=Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)))
    assert_pixel(pixel(half), [0.0, 0.0, 0.0], atol=0.02)
    # A 16-bit ramp keeps its order after conversion (no clipping to white above 255).
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    values = processor(images=Image.fromarray(ramp))["pixel_values"][0, 0, 0]
    assert values[0] < values[8] < values[16] < values[24] < values[31]
    assert values[16].item() < 0.5


def test_numpy_arrays(processor):
    hwc = np.zeros((20, 30, 3), dtype=np.uint8)
    hwc[..., 0] = 255
    assert_pixel(pixel(processor(images=hwc)), RED_PIXEL)
    chw = np.zeros((3, 20, 30), dtype=np.float32)
    chw[2] = 1.0
    features = processor(images=[chw, hwc])
    assert features["pixel_values"].shape == (2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert_pixel(pixel(features, index=0), BLUE_PIXEL)
    assert_pixel(pixel(features, index=1), RED_PIXEL)
    gray_float = np.full((20, 20), 0.5, dtype=np.float64)
    assert_pixel(pixel(processor(images=gray_float)), [0.0, 0.0, 0.0], atol=0.02)


def test_bytes_and_paths(processor, tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), GREEN).save(buffer, format="PNG")
    path = _saved(tmp_path, Image.new("RGB", (16, 16), BLUE), "blue.png")
    features = processor(images=[buffer.getvalue(), str(path), path])
    assert_pixel(pixel(features, index=0), GREEN_PIXEL)
    assert_pixel(pixel(features, index=1), BLUE_PIXEL)
    assert_pixel(pixel(features, index=2), BLUE_PIXEL)


def test_undecodable_images_raise_value_errors_naming_them(processor, tmp_path):
    buffer = io.BytesIO()
    striped_image(64, 64).save(buffer, format="JPEG")
    data = buffer.getvalue()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.jpg"):
        processor(images=str(truncated))
    with pytest.raises(ValueError, match="truncated.jpg"):
        processor(images=[Image.new("RGB", (8, 8)), truncated])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        processor(images=[Image.new("RGB", (8, 8)), b"these bytes are not an image"])
    with pytest.raises(ValueError, match=r"prompt_images\[0\]"):
        processor(images=[Image.new("RGB", (8, 8))], prompt_images=[b"\x00\x01garbage"])
    with pytest.raises(ValueError, match="missing.png"):
        processor(images=tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"images\[0\]"):
        processor(images=[{"not": "an image"}])


@pytest.mark.parametrize("name", sorted(BAD_IMAGE_FILES))
def test_every_bad_image_file_is_a_value_error_naming_it(processor, tmp_path, name):
    """Decompression bombs and corrupted headers included: Pillow raises them as `DecompressionBombError`, which is
    not an `OSError`, so data paths that skip unreadable images by `ValueError` would abort on them."""
    path = write_files(tmp_path, {name: BAD_IMAGE_FILES[name]})[name]
    with pytest.raises(ValueError, match=re.escape(name)):
        processor(images=path)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        processor(images=[Image.new("RGB", (8, 8)), pathlib.Path(path).read_bytes()])


# ----- keyword arguments, the ProcessorMixin way -----


def test_keyword_arguments_reach_the_component_that_takes_them(processor):
    image, small = striped_image(), {"height": 16, "width": 16}
    texts = ["a blue cotton t-shirt with a round neck and short sleeves"]
    # A plain keyword goes to whoever takes it: size to the image processor, max_length to the tokenizer.
    features = processor(images=image, prompt_images=image, text=texts, size=small, max_length=6)
    assert features["pixel_values"].shape[-2:] == (16, 16)
    assert features["prompt_pixel_values"].shape[-2:] == (16, 16)
    assert features["input_ids"].shape == (1, 6)
    # The same through the modality dicts.
    routed = processor(images=image, text=texts, images_kwargs={"size": small}, text_kwargs={"max_length": 6})
    assert torch.equal(routed["pixel_values"], features["pixel_values"])
    assert torch.equal(routed["input_ids"], features["input_ids"])
    # Defaults come back on the next call (nothing is stored), and the processor's own defaults hold.
    assert processor(images=image)["pixel_values"].shape[-2:] == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    padded = processor(text=["red shoe"], text_kwargs={"padding": "max_length"})
    assert padded["input_ids"].shape == (1, DEFAULT_MAX_TEXT_LENGTH)
    assert processor(images=image, do_normalize=False)["pixel_values"].min() >= 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sise": 16}, "unknown argument 'sise'"),
        ({"images_kwargs": {"sise": 16}}, "images_kwargs has arguments \\['sise'\\]"),
        ({"text_kwargs": {"max_lenght": 4}}, "text_kwargs has arguments \\['max_lenght'\\]"),
        ({"text_kwargs": 4}, "text_kwargs must be a dict"),
    ],
)
def test_unknown_keyword_arguments_are_errors_naming_them(processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor(images=striped_image(), text="red shoe", **kwargs)


def test_export_records_the_image_processor_training_used(tmp_path):
    from transformers.models.auto.image_processing_auto import _find_mapping_for_image_processor

    from modeling_eclip.training.builders import build_processor

    trained = build_processor(TINY_IMAGE_SIZE, "all-MiniLM-L6-v2")
    trained.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())["image_processor"]
    assert saved["image_processor_type"] == type(trained.image_processor).__name__
    # Whatever backend a user's environment would pick (torchvision when installed), the export names one class.
    classes = {
        getattr(value, "__name__", value)
        for value in _find_mapping_for_image_processor(saved["image_processor_type"]).values()
    }
    assert classes == {type(trained.image_processor).__name__}
    image = striped_image()
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded.image_processor) is type(trained.image_processor)
    assert torch.equal(loaded(images=image)["pixel_values"], trained(images=image)["pixel_values"])


def test_base64_strings_and_data_uris_are_images(processor, tmp_path):
    import base64

    image = striped_image()
    path = _saved(tmp_path, image, "stripes.png")
    encoded = base64.b64encode(path.read_bytes()).decode()
    expected = processor(images=image)["pixel_values"]
    for source in (encoded, f"data:image/png;base64,{encoded}", str(path)):
        assert torch.equal(processor(images=source)["pixel_values"], expected)
    with pytest.raises(ValueError, match="Cannot decode .*missing.png"):
        processor(images=[str(path), str(tmp_path / "missing.png")])


def test_exif_orientation_is_applied_as_load_image_does(processor, tmp_path):
    from transformers.image_utils import load_image

    image = striped_image(width=48, height=24)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown upright it is 24 wide and 48 high
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = load_image(str(path))
    assert upright.size == (24, 48)
    assert torch.equal(processor(images=str(path))["pixel_values"], processor(images=upright)["pixel_values"])
