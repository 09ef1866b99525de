# Copyright 2026 The ECLIP for transformers authors.
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in
# compliance with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""EclipProcessor: a ViT image processor and a BERT tokenizer behind one call; EclipImageProcessor, the image
preprocessing pretraining uses."""

import base64
import binascii
import io
import os
import stat
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import BatchFeature, DetrImageProcessorPil, ProcessorMixin, ViTImageProcessorPil
from transformers.image_utils import ChannelDimension, infer_channel_dimension_format
from transformers.processing_utils import ProcessingKwargs

# Sec. 4.1: texts are tokenized by WordPiece with a maximum length of 55.
DEFAULT_MAX_TEXT_LENGTH = 55
# Seconds to wait for an image URL, as `load_image(timeout=...)` would be told.
DEFAULT_URL_TIMEOUT = 30.0
# The largest image file or download `to_rgb_image` reads (bytes), checked before reading: product photos are far
# smaller, and a catalogue must not make a reader load a 10 GB file whole. Set it (or pass `max_file_bytes`) to read
# larger ones; it is read at each call, so setting it before the training stream starts its decode processes works.
MAX_IMAGE_FILE_BYTES = 50 * 2**20
# The floating-point model inputs that `check_model_inputs` refuses with NaN or infinite values.
FLOAT_INPUT_NAMES = ("pixel_values", "prompt_pixel_values", "positive_pixel_values", "prompt_embeds")


def to_rgb_image(
    image: Any, name: str = "image", min_size: int | None = None, *, max_file_bytes: int | None = None
) -> Image.Image:
    """Decodes a PIL image, path, URL, base64 string, bytes, array or tensor into an RGB PIL image: THE image decoder.

    Every path that reads an image (processor, pipeline, grounding, search, training, evaluation) decodes through it:

    * URLs are downloaded (as `transformers.image_utils.load_image` does) and base64 strings (also
      `data:image/...;base64,` URIs) decoded, then read like bytes.
    * Images are turned upright by their EXIF orientation (`ImageOps.exif_transpose`, as `load_image` does).
    * Transparency is composited onto white (product cut-outs are shown on white): alpha channels (RGBA, LA, PA),
      palette transparency and the tRNS colour key of RGB / grayscale PNGs alike.
    * Grayscale, palette, CMYK and 16-bit images are converted to RGB.
    * Arrays (`numpy` or `torch`) follow `transformers.image_utils`: `(height, width)`, or 1, 3 or 4 (RGBA) channels
      first or last (channels first when ambiguous, as `infer_channel_dimension_format` decides). Integer arrays hold
      values in [0, 255] and are used as they are (never rescaled by their max); float arrays hold values in [0, 1]
      and are multiplied by 255. Anything else is refused rather than guessed: a float array outside [0, 1] (e.g.
      [-1, 1] or 0-255 data in a float array; rescale or cast it yourself), NaN or infinite values, integers outside
      [0, 255], an empty array, 1-D, 4-D (a batch: pass a list) or 5-channel arrays, object or boolean arrays.

    `min_size` (an int >= 1; None: full resolution) lets an encoded JPEG (bytes, path, URL, base64) be decoded at a
    reduced scale, 1/2, 1/4 or 1/8, the smallest one that still leaves both sides at least `min_size` pixels
    (`Image.draft`: libjpeg skips the fine DCT coefficients, several times faster than a full decode on large photos).
    Images smaller than that, other formats and images passed decoded are returned at full resolution. Everything
    else above holds as it is: the decompression-bomb guard reads the header's full size, and orientation, alpha and
    modes are handled after the reduced decode.

    Files and downloads larger than `max_file_bytes` (None: `MAX_IMAGE_FILE_BYTES`, 50 MB) are refused before they
    are read (a file by its size, a download by its length or once it passes the cap), and only regular files are
    opened: a folder, an empty file, a FIFO or a device (`/dev/zero`) is refused without waiting on it.

    Errors are ValueErrors that name `name` (the argument and position, e.g. `images[3]`) and the file, if any.
    """
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1):
        raise ValueError(f"min_size must be an integer >= 1 or None, got {min_size!r}")
    max_file_bytes = MAX_IMAGE_FILE_BYTES if max_file_bytes is None else max_file_bytes
    try:
        source = None
        if isinstance(image, str) and not os.path.exists(image) and _is_url_or_base64(image):
            # A short missing path such as "shoe" is valid base64 too; say both readings failed.
            source = image if image.startswith(("http://", "https://")) else "no such file; read as base64 data"
            image = _read_url_or_base64(image, max_file_bytes)
        if isinstance(image, (str, os.PathLike)):
            source = os.fspath(image)
            with open_image_file(image, max_file_bytes) as file, Image.open(file) as opened:
                image = _decode(opened, min_size)
        elif isinstance(image, (bytes, bytearray)):
            with Image.open(io.BytesIO(image)) as opened:
                image = _decode(opened, min_size)
        elif isinstance(image, torch.Tensor):
            image = _array_to_image(image.detach().cpu().numpy())
        elif isinstance(image, np.ndarray):
            image = _array_to_image(image)
        elif not isinstance(image, Image.Image):
            raise TypeError(
                f"unsupported type {type(image).__name__}; pass a PIL image, a path, a URL, base64, bytes or an array"
            )
        image.load()
        if image.width == 0 or image.height == 0:
            raise ValueError(f"the image has no pixels ({image.width}x{image.height})")
        return _convert_mode(ImageOps.exif_transpose(image))
    except (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError) as error:
        # DecompressionBombError (a header claiming a huge image) is not an OSError; it is just as unreadable.
        where = name if source is None or source == name else f"{name} ({source})"
        raise ValueError(f"Cannot decode {where}: {error}") from error


def _decode(opened: Image.Image, min_size: int | None) -> Image.Image:
    """The pixels of an opened image file; a JPEG at the smallest draft scale whose sides stay >= `min_size`."""
    if min_size is not None and opened.format in ("JPEG", "MPO"):
        # A square request keeps both sides >= min_size whatever the EXIF orientation turns them into.
        opened.draft(None, (min_size, min_size))
    return opened.copy()


def _is_url_or_base64(text: str) -> bool:
    """A URL, a data URI or a base64 string (what `load_image` takes besides a path)."""
    if text.startswith(("http://", "https://", "data:image/")):
        return True
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class NotARegularFileError(ValueError):
    """A path to a folder, FIFO, socket or device, given as an image file (never read)."""


class ImageFileTooLargeError(ValueError):
    """An image file or download over the cap (`MAX_IMAGE_FILE_BYTES`, or `max_file_bytes`)."""


def _over_cap(size: int, max_file_bytes: int) -> ImageFileTooLargeError:
    return ImageFileTooLargeError(
        f"{size} bytes, over the cap of {max_file_bytes} bytes for an image file (processing_eclip."
        "MAX_IMAGE_FILE_BYTES, or max_file_bytes); shrink the image, or raise the cap if such files are expected"
    )


def open_image_file(path: str | os.PathLike, max_file_bytes: int | None = None) -> io.BufferedReader:
    """The file at `path` opened for reading, once its size is known to be within the cap (None:
    `MAX_IMAGE_FILE_BYTES`, read at each call). Opened without blocking and checked on the open descriptor, so a FIFO
    or a device can never hang the reader (and no race swaps the file between the check and the read). Raises
    `NotARegularFileError` (a folder, FIFO, socket or device), `ImageFileTooLargeError`, or a ValueError for an empty
    file; the reader of every image file: `to_rgb_image` and the catalogue converter."""
    max_file_bytes = MAX_IMAGE_FILE_BYTES if max_file_bytes is None else max_file_bytes
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise NotARegularFileError("it is a folder, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError("not a regular file (a FIFO, socket or device is never read)")
        if info.st_size == 0:
            raise ValueError("the file is empty (0 bytes)")
        if info.st_size > max_file_bytes:
            raise _over_cap(info.st_size, max_file_bytes)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _read_url_or_base64(text: str, max_file_bytes: int) -> bytes:
    """The encoded image behind a URL, a data URI or a base64 string, decoded by `to_rgb_image` like any bytes."""
    if text.startswith(("http://", "https://")):
        # The standard library (redirects followed), so remote code needs no HTTP package.
        try:
            with urllib.request.urlopen(text, timeout=DEFAULT_URL_TIMEOUT) as response:
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > max_file_bytes:
                    raise _over_cap(int(length), max_file_bytes)
                data = response.read(max_file_bytes + 1)  # never more than the cap, whatever the server claims
        except (urllib.error.URLError, TimeoutError) as error:
            raise OSError(f"cannot download it: {error}") from error
        if len(data) > max_file_bytes:
            raise _over_cap(len(data), max_file_bytes)
        return data
    if text.startswith("data:image/"):
        text = text.split(",", 1)[-1]
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"invalid base64: {error}") from error


def _array_to_image(array: np.ndarray) -> Image.Image:
    """An image array as a PIL image (L, RGB or RGBA) under the conventions of `to_rgb_image`; refuses the rest."""
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(
            f"an image array holds integers in [0, 255] or floats in [0, 1], got an array of dtype {array.dtype}"
        )
    if array.ndim not in (2, 3):
        hint = "; for a batch pass a list of images" if array.ndim == 4 else ""
        raise ValueError(
            "an image array is (height, width), (height, width, channels) or (channels, height, width), got shape "
            f"{array.shape}{hint}"
        )
    if array.size == 0:
        raise ValueError(f"the array has no pixels (shape {array.shape})")
    if array.ndim == 3:
        try:
            # transformers' rule for grey and RGB (channels first when ambiguous), then RGBA.
            channels = infer_channel_dimension_format(array, num_channels=(1, 3))
        except ValueError:
            try:
                channels = infer_channel_dimension_format(array, num_channels=4)
            except ValueError:
                raise ValueError(
                    f"an image array has 1, 3 or 4 channels, first or last, got shape {array.shape}"
                ) from None
        if channels == ChannelDimension.FIRST:
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] == 1:
            array = array[..., 0]
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("the array has NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            # Never clipped or rescaled by a guess: [-1, 1] or 0-255 data would silently come out wrong.
            raise ValueError(
                f"a float image array holds values in [0, 1], got values in [{low:g}, {high:g}]; for 0-255 data pass "
                "an integer array (array.astype(np.uint8)), for [-1, 1] data pass (array + 1) / 2"
            )
        array = np.round(array * 255.0)
    else:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"an integer image array holds values in [0, 255], got values in [{low}, {high}]; rescale it to uint8 "
                "(16-bit images: pass the file or a PIL image)"
            )
    return Image.fromarray(array.astype(np.uint8))


def _convert_mode(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array / high * 255.0, 0, 255).astype(np.uint8))
    # Palette transparency and the tRNS colour key of RGB / L PNGs live in info["transparency"]; converting to RGBA
    # turns them into alpha (a plain convert("RGB") drops them and leaves the keyed colour, often black).
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    # CMYK (Pillow already undoes Adobe's inverted CMYK when decoding), L, YCbCr...: plain conversion.
    return image.convert("RGB") if image.mode != "RGB" else image


def to_rgb_images(images: Any, argument: str, names: Sequence[str] | None = None) -> list[Image.Image]:
    """`to_rgb_image` over one image or a list, naming `argument[index]` (or `names[index]`) in errors."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"{argument} is empty: pass at least one image.")
        if names is not None and len(names) != len(images):
            raise ValueError(f"Got {len(images)} {argument} but {len(names)} names.")
        return [
            to_rgb_image(image, f"{argument}[{index}]" if names is None else names[index])
            for index, image in enumerate(images)
        ]
    return [to_rgb_image(images, argument if names is None else names[0])]


def is_blank_text(text: str) -> bool:
    """True for a text with nothing to read: only whitespace (`str.isspace`, e.g. the ideographic space U+3000),
    control or invisible format characters (e.g. the zero-width space U+200B)."""
    return all(character.isspace() or unicodedata.category(character) in ("Cc", "Cf") for character in text)


def check_texts(texts: Any, argument: str, names: Sequence[str] | None = None) -> list[str]:
    """THE text rule of ECLIP's inputs (product titles, category prompts, search queries), as a list of strings.

    Every text must be a `str` with something to read: an empty or blank text (`is_blank_text`) would embed as the
    bare `[CLS] [SEP]` of the tokenizer, the same vector for every such product, so it is a ValueError naming
    `argument[index]` (or `names[index]`). The text is otherwise taken literally: `EclipProcessor` tokenizes it with
    `split_special_tokens=True`, so a title such as "[SEP] [CLS]" is the words "[ sep ] [ cls ]", never control tokens.
    """
    single = isinstance(texts, str)
    if single:
        texts = [texts]
    elif not isinstance(texts, (list, tuple)):
        raise ValueError(f"{argument} must be a string or a list of strings, got {type(texts).__name__}.")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{argument} is empty: pass at least one text.")
    if names is not None and len(names) != len(texts):
        raise ValueError(f"Got {len(texts)} {argument} but {len(names)} names.")
    for index, text in enumerate(texts):
        where = argument if single else f"{argument}[{index}]" if names is None else names[index]
        if not isinstance(text, str):
            raise ValueError(f"{where} must be a string, got {type(text).__name__} {text!r}.")
        if is_blank_text(text):
            raise ValueError(f"{where} is {text!r}: a text needs at least one visible character.")
    return texts


def check_model_inputs(inputs: Mapping[str, Any], config: Any) -> None:
    """THE value check of ECLIP's model inputs, run once per batch on the host where the batch is made (the pipeline,
    grounding; for tensors built by hand, call it yourself), before the tensors move to the device.

    The model's `forward` checks shapes and dtypes only: reading values there would make every step wait for the
    device. Raises a ValueError naming the input for NaN or infinite `pixel_values`, `prompt_pixel_values`,
    `positive_pixel_values` or `prompt_embeds`, `input_ids` outside the text tower's vocabulary `[0, vocab_size)` (a
    tokenizer that does not match the model) and `token_type_ids` outside `[0, type_vocab_size)`. `config` is the
    model's `EclipConfig`. Missing inputs, and inputs of a shape or dtype the model refuses, are left to the model.
    """
    for name in FLOAT_INPUT_NAMES:
        tensor = inputs.get(name)
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} has NaN or infinite values.")
    text_config = config.text_config
    for name, limit in (
        ("input_ids", text_config.vocab_size),
        ("token_type_ids", getattr(text_config, "type_vocab_size", None)),
    ):
        tensor = inputs.get(name)
        if not isinstance(tensor, torch.Tensor) or not limit or tensor.numel() == 0:
            continue
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            continue  # the model names the dtype
        low, high = (int(value) for value in torch.aminmax(tensor))
        if low < 0 or high >= limit:
            raise ValueError(f"{name} must lie in [0, {limit}), got values in [{low}, {high}].")


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
    # truncated at the paper's 55 WordPiece tokens (Sec. 4.1); texts are plain text, so "[SEP]" in a title is words,
    # not a control token (`check_texts` has the whole rule).
    text_kwargs = {
        "padding": True,
        "truncation": True,
        "max_length": DEFAULT_MAX_TEXT_LENGTH,
        "split_special_tokens": True,
    }

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
        if "split_special_tokens" in kwargs:  # not in ProcessingKwargs, so _merge_kwargs would drop it as a plain key
            text_kwargs = kwargs.get("text_kwargs") or {}
            kwargs["text_kwargs"] = {**text_kwargs, "split_special_tokens": kwargs.pop("split_special_tokens")}
        # No tokenizer_init_kwargs: a tokenizer saved with its own max_length (MiniLM's 128) would override the 55 of
        # Sec. 4.1.
        merged = self._merge_kwargs(ProcessingKwargs, **kwargs)
        data: dict[str, Any] = {}
        if text is not None:
            text = check_texts(text, "text")
            text_kwargs = {**merged["text_kwargs"], "return_tensors": return_tensors}
            data.update(self.tokenizer(text, **text_kwargs))
        images_kwargs = {**merged["images_kwargs"], "return_tensors": return_tensors}
        if images is not None:
            images = to_rgb_images(images, "images")
            data["pixel_values"] = self.image_processor(images, **images_kwargs)["pixel_values"]
        if prompt_images is not None:
            prompt_images = to_rgb_images(prompt_images, "prompt_images")
            if images is not None and len(prompt_images) != len(images):
                raise ValueError(
                    f"Got {len(images)} images but {len(prompt_images)} prompt_images; pass one prompt per image."
                )
            data["prompt_pixel_values"] = self.image_processor(prompt_images, **images_kwargs)["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _valid_kwargs(self) -> dict[str, set[str]]:
        """What the tokenizer (`text_kwargs`) and the image processor (`images_kwargs`) accept."""
        valid = {}
        for modality, component in (("text_kwargs", self.tokenizer), ("images_kwargs", self.image_processor)):
            names = set(ProcessingKwargs.__annotations__[modality].__annotations__)
            names |= set(getattr(getattr(component, "valid_kwargs", None), "__annotations__", {}))
            valid[modality] = names
        # A tokenizer argument that ProcessingKwargs does not list; our default sets it (see `check_texts`).
        valid["text_kwargs"].add("split_special_tokens")
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


__all__ = [
    "EclipImageProcessor",
    "EclipProcessor",
    "check_model_inputs",
    "check_texts",
    "is_blank_text",
    "to_rgb_image",
    "to_rgb_images",
]
