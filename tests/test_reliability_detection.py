# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Reliability of the detection transfer (issue 28): labels built by hand, bad images and rows of a catalogue (skipped
and counted as pretraining skips them), a fine-tuning that keeps its export when the evaluation fails, and the
object-detection pipeline decoding as the package decodes."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config
from helpers import tiny_pixel_values as pixels
from transformers import BatchFeature

from modeling_eclip import EclipForObjectDetection


def _detector(**overrides) -> EclipForObjectDetection:
    torch.manual_seed(0)
    return EclipForObjectDetection(tiny_config(num_labels=3, **overrides)).eval()


# ------------------------------------------------------------------------------------------- labels by hand
@pytest.mark.parametrize(
    ("target", "named"),
    [
        ({"class_labels": torch.tensor([0]), "boxes": [[0.5, 0.5, 0.2, 0.2]]}, r'labels\[0\]\["boxes"\]'),
        ({"class_labels": [0], "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}, r'labels\[0\]\["class_labels"\]'),
        ({"class_labels": torch.tensor([0]), "boxes": None}, r'labels\[0\]\["boxes"\]'),
    ],
    ids=["boxes_as_a_list", "class_labels_as_a_list", "boxes_none"],
)
def test_labels_that_are_not_tensors_are_a_type_error_naming_the_entry(target: dict, named: str) -> None:
    # DETR in transformers takes tensors only (its image processor makes them); so does this model, and says so.
    with pytest.raises(TypeError, match=named + r".*torch\.Tensor"):
        _detector()(pixel_values=pixels(1), labels=[target])


def test_integer_boxes_are_refused_naming_the_dtype() -> None:
    target = {"class_labels": torch.tensor([0]), "boxes": torch.tensor([[1, 1, 2, 2]])}
    with pytest.raises(ValueError, match=r"labels\[0\]: boxes must be floating point.*torch\.int64"):
        _detector()(pixel_values=pixels(1), labels=[target])


def test_labels_from_an_image_processor_are_taken() -> None:
    # DETR's image processor returns each image's labels as a BatchFeature (a mapping, not a dict).
    target = {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    model = _detector()
    expected = model(pixel_values=pixels(1), labels=[target]).loss
    output = model(pixel_values=pixels(1), labels=[BatchFeature(target)]).loss
    torch.testing.assert_close(output, expected)
