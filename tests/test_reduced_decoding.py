# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Reduced JPEG decoding (`to_rgb_image(min_size=...)`, `Image.draft`) in the training stream: never less resolution
than the model gets, orientation / PNG / bomb guard as in a full decode, and pixel values close to a full decode."""

import numpy as np
import pytest
from bad_inputs import photo_jpeg, png_bomb, valid_png
from PIL import Image

from modeling_eclip import EclipImageProcessor
from modeling_eclip.data.stream import CropResize, ProductPairStream, augment_image, make_pair, min_decode_size
from modeling_eclip.processing_eclip import to_rgb_image
from modeling_eclip.training.builders import build_processor


@pytest.fixture(scope="module")
def photo() -> bytes:
    return photo_jpeg(1000, 700, seed=1)


@pytest.mark.parametrize("min_size", [50, 100, 191, 334, 349, 350, 700, 1000, 5000])
def test_drafted_jpeg_keeps_both_sides_at_least_min_size(photo, min_size):
    decoded = to_rgb_image(photo, min_size=min_size)
    assert decoded.mode == "RGB"
    # Either reduced with both sides >= min_size, or (too small to reduce) the full image.
    assert min(decoded.size) >= min_size or decoded.size == (1000, 700)
    # The scale is the smallest one allowed: half of it would break the bound (or it is already 1/8).
    scale = 1000 // decoded.width
    assert scale in (1, 2, 4, 8)
    assert scale == 8 or 700 // (2 * scale) < min_size


def test_drafted_decode_is_reduced_on_large_photos(photo):
    # 334 px (a 224 px model with the training crop) from a 1000 x 700 photo: decoded at 1/2.
    assert to_rgb_image(photo, min_size=334).size == (500, 350)
    assert to_rgb_image(photo, min_size=175).size == (250, 175)
    assert to_rgb_image(photo).size == (1000, 700)


def test_drafted_decode_keeps_exif_orientation(tmp_path):
    data = photo_jpeg(800, 400, seed=2, orientation=6)  # shown upright 400 wide, 800 tall
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    full = to_rgb_image(data)
    assert full.size == (400, 800)
    for source in (data, str(path)):
        drafted = to_rgb_image(source, min_size=150)
        assert drafted.size == (200, 400)  # 1/2: both sides stay >= 150, and upright (taller than wide)
        # The same picture, not a rotated one: close to the full decode resized to the same size.
        reference = np.asarray(full.resize(drafted.size, Image.Resampling.BOX), dtype=np.float32)
        assert np.abs(np.asarray(drafted, dtype=np.float32) - reference).mean() < 4


def test_png_and_decoded_images_are_unaffected():
    png = valid_png(3, size=64)
    assert np.array_equal(np.asarray(to_rgb_image(png, min_size=8)), np.asarray(to_rgb_image(png)))
    image = Image.new("RGB", (640, 480), (10, 20, 30))
    assert to_rgb_image(image, min_size=8).size == (640, 480)


def test_min_size_keeps_the_decoder_guards():
    with pytest.raises(ValueError, match="Cannot decode image.*exceeds limit"):
        to_rgb_image(png_bomb(), min_size=100)
    for bad in (0, -3, 2.5, True, "224"):
        with pytest.raises(ValueError, match="min_size must be an integer >= 1"):
            to_rgb_image(b"", min_size=bad)


def test_processor_output_barely_changes_with_reduced_decoding(photo):
    processor = EclipImageProcessor(size={"height": 224, "width": 224})
    full = processor(to_rgb_image(photo), return_tensors="np")["pixel_values"]
    drafted = processor(to_rgb_image(photo, min_size=224), return_tensors="np")["pixel_values"]
    assert drafted.shape == full.shape == (1, 3, 224, 224)
    # Normalised values span about [-2, 2]; the DCT-domain downscale differs from the resize by a fraction of a grey
    # level on average.
    assert np.abs(drafted - full).mean() < 0.01


def test_stream_decodes_at_the_model_resolution_after_the_crop(photo):
    processor = build_processor(224)
    # sqrt(0.6 * 3/4) of a side survives the random-resized crop: 224 / 0.67 -> 334 px; without the crop 224 px.
    assert min_decode_size(processor, augment=True) == 334
    assert min_decode_size(processor, augment=False) == 224
    assert ProductPairStream([], processor, augment=True).min_size == 334
    assert ProductPairStream([], processor, augment=True, reduced_decoding=False).min_size is None
    square = photo_jpeg(1000, 1000, seed=4)
    images = [{"image": data, "path": None, "source": "s", "kind": "catalog"} for data in (photo, square, photo)]
    example = {"product_id": "p", "title": "a product", "images": images, "noncontiguous": False}
    for position in range(12):
        sample = make_pair(example, seed=0, epoch=0, position=position, augment=True, min_size=334)
        # Every augmented crop still has at least the model's 224 px on both sides: no resolution is lost.
        assert min(sample["anchor"].size) >= 224 and min(sample["positive"].size) >= 224


def test_large_crops_are_resized_to_the_model_input_before_the_colour_jitter(photo):
    processor = build_processor(224)
    resize = ProductPairStream([], processor, augment=True).crop_resize
    assert resize == CropResize(224, 224, int(processor.image_processor.resample))
    assert ProductPairStream([], processor, augment=True, reduced_decoding=False).crop_resize is None
    decoded = to_rgb_image(photo, min_size=334)
    for seed in range(6):
        early = augment_image(decoded, np.random.default_rng(seed), resize)
        late = augment_image(decoded, np.random.default_rng(seed))
        assert early.size == (224, 224) and min(late.size) > 224  # the same crop, resized before the jitter
        # What the model gets: the processor's resize of either; jitter and resize nearly commute.
        ours = processor.image_processor(early, return_tensors="np")["pixel_values"]
        theirs = processor.image_processor(late, return_tensors="np")["pixel_values"]
        assert np.abs(ours - theirs).mean() < 0.02
    # Crops no larger than the model's input (the demo's 128 px images at 128 px) are left to the processor: unchanged.
    small = to_rgb_image(valid_png(0, size=128))
    small_resize = CropResize(128, 128, int(processor.image_processor.resample))
    for seed in range(6):
        a = augment_image(small, np.random.default_rng(seed), small_resize)
        b = augment_image(small, np.random.default_rng(seed))
        assert np.array_equal(np.asarray(a), np.asarray(b))
