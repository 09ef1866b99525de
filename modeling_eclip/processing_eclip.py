# Copyright 2026 The ECLIP for transformers authors.
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in
# compliance with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""EclipProcessor: a ViT image processor and a BERT tokenizer behind one call; EclipImageProcessor, the image
preprocessing pretraining uses."""

import base64
import binascii
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from transformers import BatchFeature, DetrImageProcessorPil, ProcessorMixin, ViTImageProcessorPil
from transformers.image_utils import load_image
from transformers.processing_utils import ProcessingKwargs

# Sec. 4.1: texts are tokenized by WordPiece with a maximum length of 55.
DEFAULT_MAX_TEXT_LENGTH = 55


def to_rgb_image(image: Any, name: str = "image") -> Image.Image:
    """Decodes a PIL image, path, URL, base64 string, bytes or array into an RGB PIL image.

    URLs and base64 strings (also `data:image/...;base64,` URIs) are loaded by `transformers.image_utils.load_image`,
    as the stock image pipelines do. Images are turned upright by their EXIF orientation (as `load_image` does);
    grayscale, palette, CMYK and 16-bit images are converted; transparent pixels are composited onto white (product
    cut-outs are usually shown on white). Errors name the file or the position of the image.
    """
    try:
        if isinstance(image, str) and not os.path.exists(image) and _is_url_or_base64(image):
            return load_image(image)
        if isinstance(image, (str, os.PathLike)):
            name = os.fspath(image)
            with Image.open(image) as opened:
                image = opened.copy()
        elif isinstance(image, (bytes, bytearray)):
            with Image.open(io.BytesIO(image)) as opened:
                image = opened.copy()
        elif isinstance(image, np.ndarray):
            image = _array_to_image(image)
        elif not isinstance(image, Image.Image):
            raise TypeError(f"unsupported type {type(image).__name__}; pass a PIL image, a path, bytes or an array")
        image.load()
        return _convert_mode(ImageOps.exif_transpose(image))
    except (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError) as error:
        # DecompressionBombError (a header claiming a huge image) is not an OSError; it is just as unreadable.
        raise ValueError(f"Cannot decode {name}: {error}") from error


def _is_url_or_base64(text: str) -> bool:
    """A URL, a data URI or a base64 string (what `load_image` takes besides a path)."""
    if text.startswith(("http://", "https://", "data:image/")):
        return True
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first to channels-last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = np.asarray(array, dtype=np.float64)
        # Float images in [0, 1] are common (e.g. from numpy pipelines); anything else is rescaled by its range.
        high = 1.0 if array.max(initial=0.0) <= 1.0 else float(array.max())
        array = np.clip(np.round(array / max(high, 1e-12) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def _convert_mode(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array / high * 255.0, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    # CMYK (Pillow already undoes Adobe's inverted CMYK when decoding), L, YCbCr...: plain conversion.
    return image.convert("RGB") if image.mode != "RGB" else image


def to_rgb_images(images: Any, argument: str) -> list[Image.Image]:
    """`to_rgb_image` over one image or a list, naming `argument[index]` in errors."""
    if isinstance(images, (list, tuple)):
        return [to_rgb_image(image, f"{argument}[{index}]") for index, image in enumerate(images)]
    return [to_rgb_image(images, argument)]


class EclipImageProcessor(ViTImageProcessorPil):
    r"""
    ECLIP's image preprocessing: ViT's (the whole image resized to the model's size, no centre crop, so grounding maps
    cover the whole picture; rescale and normalise), on PIL, as pretraining runs it.

    Its own class so that an export loads with the preprocessing training used: a saved `ViTImageProcessorPil` is
    written as `ViTImageProcessor`, which `AutoImageProcessor` builds with the torchvision backend wherever
    torchvision is installed, and that backend resizes differently.
    """

    def post_process_object_detection(
        self, outputs: Any, threshold: float = 0.5, target_sizes: Any = None
    ) -> list[dict[str, Any]]:
        """[`EclipForObjectDetection`] outputs as boxes on each original image, DETR's format (what transformers'
        object-detection pipeline reads): per image `{"scores", "labels", "boxes"}`, boxes as (x0, y0, x1, y1) in
        pixels of `target_sizes` (`(batch, 2)` of (height, width); normalised to [0, 1] without), the slots whose best
        class other than "no object" scores above `threshold`.

        DETR's own post-processing (`DetrImageProcessorPil.post_process_object_detection`), which reads nothing of
        the processor: both models give softmax logits with a last "no object" class and normalised (cx, cy, w, h)
        boxes, and the whole image is resized (no crop), so normalised boxes scale straight back to the original.
        """
        return DetrImageProcessorPil.post_process_object_detection(self, outputs, threshold, target_sizes)


class EclipProcessor(ProcessorMixin):
    r"""
    Builds ECLIP inputs: an image processor ([`EclipImageProcessor`]: resizes the whole image to the model's size, no
    centre crop, so grounding maps cover the whole picture) and a BERT tokenizer (max length 55, Sec. 4.1).

    Keyword arguments are routed the `ProcessorMixin` way: `text_kwargs={...}` go to the tokenizer,
    `images_kwargs={...}` to the image processor (for the images and the prompt images), and a plain keyword goes to
    whichever accepts it (`size=` to the image processor, `max_length=` to the tokenizer). An argument neither accepts
    is an error.

    Args:
        image_processor: a ViT-style image processor.
        tokenizer: a BERT-style tokenizer.
    """

    # Defaults under whatever the caller passes (ProcessorMixin's class-attribute defaults): padded to the longest text,
    # truncated at the paper's 55 WordPiece tokens (Sec. 4.1).
    text_kwargs = {"padding": True, "truncation": True, "max_length": DEFAULT_MAX_TEXT_LENGTH}

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        prompt_images: Any = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        r"""
        images: product images (PIL, path, URL, base64, bytes or array, or a list of them) -> `pixel_values`.
        text: product texts -> `input_ids`, `attention_mask` (and `token_type_ids`); padded to the longest text,
            truncated at 55 tokens unless `max_length` / `padding` say otherwise.
        prompt_images: image prompts, one per image -> `prompt_pixel_values`.
        kwargs: `text_kwargs` / `images_kwargs` dicts, or plain keywords of the tokenizer or the image processor.
        """
        if images is None and text is None and prompt_images is None:
            raise ValueError("EclipProcessor needs at least one of `images`, `text` or `prompt_images`.")
        self._check_kwargs(kwargs)
        # No tokenizer_init_kwargs: a tokenizer saved with its own max_length (MiniLM's 128) would override the 55 of
        # Sec. 4.1.
        merged = self._merge_kwargs(ProcessingKwargs, **kwargs)
        data: dict[str, Any] = {}
        if text is not None:
            if isinstance(text, str):
                text = [text]
            if not all(isinstance(item, str) for item in text):
                raise ValueError("`text` must be a string or a list of strings.")
            text_kwargs = {**merged["text_kwargs"], "return_tensors": return_tensors}
            data.update(self.tokenizer(list(text), **text_kwargs))
        images_kwargs = {**merged["images_kwargs"], "return_tensors": return_tensors}
        if images is not None:
            pixels = self.image_processor(to_rgb_images(images, "images"), **images_kwargs)
            data["pixel_values"] = pixels["pixel_values"]
        if prompt_images is not None:
            prompts = self.image_processor(to_rgb_images(prompt_images, "prompt_images"), **images_kwargs)
            data["prompt_pixel_values"] = prompts["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _valid_kwargs(self) -> dict[str, set[str]]:
        """What the tokenizer (`text_kwargs`) and the image processor (`images_kwargs`) accept."""
        valid = {}
        for modality, component in (("text_kwargs", self.tokenizer), ("images_kwargs", self.image_processor)):
            names = set(ProcessingKwargs.__annotations__[modality].__annotations__)
            names |= set(getattr(getattr(component, "valid_kwargs", None), "__annotations__", {}))
            valid[modality] = names
        return valid

    def _check_kwargs(self, kwargs: dict[str, Any]) -> None:
        """Raises a ValueError naming any keyword that neither the tokenizer nor the image processor takes (transformers
        only warns and drops it)."""
        valid = self._valid_kwargs()
        for key, value in kwargs.items():
            if key in valid:
                if not isinstance(value, dict):
                    raise ValueError(f"{key} must be a dict of keyword arguments, got {type(value).__name__}.")
                unknown = sorted(set(value) - valid[key])
                if unknown:
                    raise ValueError(
                        f"{key} has arguments {unknown} that the {key.split('_')[0]} processing does not take."
                    )
            elif key != "common_kwargs" and not any(key in names for names in valid.values()):
                raise ValueError(
                    f"EclipProcessor got an unknown argument {key!r}: not a tokenizer or image processor argument "
                    "(pass them plainly or as text_kwargs={...} / images_kwargs={...})."
                )

    @property
    def model_input_names(self) -> list[str]:
        return [*self.tokenizer.model_input_names, "pixel_values", "prompt_pixel_values"]


__all__ = ["EclipImageProcessor", "EclipProcessor", "to_rgb_image", "to_rgb_images"]
