# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The bad-input corpus: images, arrays and texts a careless or hostile user supplies, generated on the fly (no binary
blobs in git). Each generator returns bytes (an encoded file) or an array; `BAD_IMAGE_FILES` names the encoded ones
that no decoder may accept, `AWKWARD_IMAGE_FILES` those that are valid but easy to get wrong (orientation,
transparency), with the colour or shape the one decoder must give them.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

# ----- files that are not decodable images -----


def _png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def _encoded(image: Image.Image, image_format: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **save)
    return buffer.getvalue()


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 8x8 PNG whose header claims `width` x `height` (Pillow's DecompressionBombError past 2x its limit)."""
    data = bytearray(_png(Image.new("L", (8, 8), 128)))
    # The IHDR chunk starts at byte 8: length(4) type(4) width(4) height(4) ... crc(4) after its 13 data bytes.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def gif_bad_header() -> bytes:
    """A GIF whose logical screen and frame claim 65535 x 65535: a corrupted header."""
    data = bytearray(_encoded(Image.new("P", (4, 4), 1), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    descriptor = data.index(b",")  # the image descriptor; its width and height follow left and top
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def bmp_bad_header() -> bytes:
    """A BMP whose info header claims 30000 x 30000 pixels."""
    data = bytearray(_encoded(Image.new("RGB", (4, 4), (10, 20, 30)), "BMP"))
    data[18:26] = struct.pack("<ii", 30000, 30000)
    return bytes(data)


def truncated_jpeg() -> bytes:
    """The first third of a JPEG."""
    data = _encoded(Image.new("RGB", (64, 64), (200, 30, 30)), "JPEG")
    return data[: len(data) // 3]


BAD_IMAGE_FILES = {
    "png_bomb.png": png_bomb,
    "gif_bad_header.gif": gif_bad_header,
    "bmp_bad_header.bmp": bmp_bad_header,
    "truncated.jpg": truncated_jpeg,
    "empty.png": lambda: b"",
    "text.png": lambda: b"this is not an image\n",
}

# ----- valid images that decoders get wrong -----

ORIENTED_SIZE = (40, 20)  # stored width x height; EXIF orientation 6 shows it as 20 x 40


def exif_rotated_jpeg() -> bytes:
    """A 40 x 20 JPEG with EXIF orientation 6 ("rotate 90 CW to view"): upright it is 20 wide, 40 tall."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encoded(Image.new("RGB", ORIENTED_SIZE, (0, 128, 255)), "JPEG", exif=exif.tobytes())


def photo_jpeg(width: int, height: int, seed: int = 0, orientation: int | None = None) -> bytes:
    """A photo-like JPEG (quality 90): smooth colour gradients, a few sharp-edged blocks and mild sensor noise, with an
    EXIF ``orientation`` when given (6: rotate 90 CW to view, so it shows ``height`` wide and ``width`` tall)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    pixels = np.stack([127 + 90 * np.sin(x / width * 3 + y / height * 2 + p) for p in phase], axis=-1)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        pixels[y0 : y0 + height // 5, x0 : x0 + width // 5] = rng.integers(0, 256, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    save = {"quality": 90}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    return _encoded(image, "JPEG", **save)


def transparent_rgba_png() -> bytes:
    """Fully transparent black RGBA: white when composited as it must be."""
    return _png(Image.new("RGBA", (16, 16), (0, 0, 0, 0)))


def transparent_la_png() -> bytes:
    """Fully transparent black grayscale with alpha."""
    return _png(Image.new("LA", (16, 16), (0, 0)))


def palette_trns_png() -> bytes:
    """A palette image whose only colour (black, index 0) is transparent by its tRNS chunk."""
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0] * 256)
    return _png(image, transparency=0)


def rgb_colour_key_png() -> bytes:
    """An RGB image whose colour (0, 0, 0) is transparent by a tRNS colour key."""
    return _png(Image.new("RGB", (16, 16), (0, 0, 0)), transparency=(0, 0, 0))


def grey_colour_key_png() -> bytes:
    """A grayscale image whose level 0 is transparent by a tRNS colour key."""
    return _png(Image.new("L", (16, 16), 0), transparency=0)


WHITE = (255, 255, 255)
AWKWARD_IMAGE_FILES = {
    "transparent_rgba.png": (transparent_rgba_png, WHITE),
    "transparent_la.png": (transparent_la_png, WHITE),
    "palette_trns.png": (palette_trns_png, WHITE),
    "rgb_colour_key.png": (rgb_colour_key_png, WHITE),
    "grey_colour_key.png": (grey_colour_key_png, WHITE),
}

# ----- arrays -----

BAD_ARRAYS = {
    "empty_0x0": lambda: np.zeros((0, 0, 3), dtype=np.uint8),
    "nan_float": lambda: np.full((8, 8, 3), np.nan, dtype=np.float32),
    "infinite_float": lambda: np.full((8, 8, 3), np.inf, dtype=np.float32),
    "four_dimensional": lambda: np.zeros((1, 8, 8, 3), dtype=np.uint8),
    "one_dimensional": lambda: np.zeros((64,), dtype=np.uint8),
    "five_channels": lambda: np.zeros((8, 8, 5), dtype=np.uint8),
    "object_dtype": lambda: np.array([[None, None]], dtype=object),
    "bool_mask": lambda: np.ones((8, 8), dtype=bool),
    # Out of the conventional ranges: never clipped or rescaled by a guess.
    "float_minus_one_to_one": lambda: np.linspace(-1, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3),
    "float_0_255": lambda: np.full((8, 8, 3), 200.0, dtype=np.float32),
    "int_above_255": lambda: np.full((8, 8, 3), 1000, dtype=np.int64),
    "negative_int": lambda: np.full((8, 8, 3), -5, dtype=np.int16),
}

# Valid arrays and the colour of their pixel (0, 0) in the decoded RGB image: integers as they are (never rescaled by
# their max), floats in [0, 1] times 255, channels first or last, grey and RGBA (composited on white).
GOOD_ARRAYS = {
    "dark_int64": (lambda: np.full((8, 8, 3), 7, dtype=np.int64), (7, 7, 7)),
    "dark_uint16": (lambda: np.full((8, 8), 20, dtype=np.uint16), (20, 20, 20)),
    "float_half": (lambda: np.full((8, 8, 3), 0.5, dtype=np.float64), (128, 128, 128)),
    "channels_first": (lambda: np.stack([np.full((6, 8), v, np.uint8) for v in (10, 20, 30)]), (10, 20, 30)),
    "transparent_rgba": (lambda: np.zeros((8, 8, 4), dtype=np.uint8), WHITE),
}

# ----- texts -----

BLANK_TITLES = ["", " ", "\t\n", "\u3000", "\u200b"]  # the last two: ideographic and zero-width space
CONTROL_TOKEN_TITLES = ["[SEP] [CLS]", "[PAD][PAD]", "[MASK] shoe", "[UNK]"]


def write_files(folder, corpus: dict) -> dict[str, str]:
    """Writes each entry of `corpus` (name -> generator, or name -> (generator, expected)) into `folder`."""
    paths = {}
    for name, entry in corpus.items():
        generator = entry[0] if isinstance(entry, tuple) else entry
        path = folder / name
        path.write_bytes(generator())
        paths[name] = str(path)
    return paths


# ----- catalogue rows and files (modeling_eclip/data/convert.py) -----


def valid_png(seed: int, size: int = 24) -> bytes:
    """A small decodable PNG of random colours."""
    return _png(Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)))


def hostile_image_paths(catalogue_folder, outside_image) -> dict[str, tuple[str, str, str]]:
    """Image fields that leave the catalogue folder or name no regular file, created under `catalogue_folder`
    (`outside_image`: a valid image file outside it). name -> (image field, reason by default, reason with
    `allow_outside_paths`; "accepted" when the row is then taken)."""
    import os

    (catalogue_folder / "link-out.png").symlink_to(outside_image)
    (catalogue_folder / "link-zero.png").symlink_to("/dev/zero")
    os.mkfifo(catalogue_folder / "fifo.png")
    (catalogue_folder / "folder.png").mkdir()
    relative = os.path.relpath(outside_image, catalogue_folder)
    return {
        "dot_dot": (relative, "path_outside_catalogue", "accepted"),
        "absolute": (str(outside_image), "path_outside_catalogue", "accepted"),
        "symlink_out": ("link-out.png", "path_outside_catalogue", "accepted"),
        "proc_environ": ("/proc/self/environ", "path_outside_catalogue", "unreadable_image"),
        "dev_zero": ("/dev/zero", "path_outside_catalogue", "not_a_regular_file"),
        "symlink_dev_zero": ("link-zero.png", "path_outside_catalogue", "not_a_regular_file"),
        "fifo": ("fifo.png", "not_a_regular_file", "not_a_regular_file"),
        "folder": ("folder.png", "not_a_regular_file", "not_a_regular_file"),
        "nul_byte": ("good-0.png\x00.png", "missing_image_file", "missing_image_file"),
    }


# JSONL lines that are no catalogue row: line text -> what the error must name.
MALFORMED_JSONL_LINES = {
    '{"product_id": "p", "title": "t", "image": "a.png"': "not JSON",
    "[1, 2, 3]": "expected a JSON object",
    '"just a string"': "expected a JSON object",
    '{"product_id": "p", "title": "t", "image": 5}': "image must be a path",
    '{"product_id": "p", "title": "t", "image": ["a.png"]}': "image must be a path",
    '{"product_id": "p", "title": ["t"], "image": "a.png"}': "title must be a string",
    '{"product_id": true, "title": "t", "image": "a.png"}': "product_id must be a string",
}
LATIN1_TITLE = "Caf\xe9 cr\xe8me".encode("latin-1")  # not UTF-8


# ----- detection boxes -----

# Pixel boxes [x0, y0, x1, y1] on a BAD_BOXES_IMAGE_SIZE image, each with the reason the catalogue conversion counts
# it under (`modeling_eclip.detection.data.SKIP_REASONS`).
BAD_BOXES_IMAGE_SIZE = (32, 24)  # width, height
BAD_PIXEL_BOXES = {
    "no_boxes": ([], "no_boxes"),
    "past_the_right_edge": ([[20.0, 4.0, 40.0, 20.0]], "box_outside_image"),
    "negative_corner": ([[-3.0, 2.0, 10.0, 10.0]], "box_outside_image"),
    "below_the_bottom": ([[2.0, 10.0, 10.0, 30.0]], "box_outside_image"),
    "zero_width": ([[5.0, 5.0, 5.0, 10.0]], "degenerate_box"),
    "inverted": ([[10.0, 10.0, 4.0, 4.0]], "degenerate_box"),
    "three_numbers": ([[1.0, 2.0, 3.0]], "degenerate_box"),
    "nan_corner": ([[float("nan"), 2.0, 10.0, 10.0]], "degenerate_box"),
}
# DETR-format targets (class_labels, normalised cx, cy, w, h) for a model with 3 labels, each with a word its error
# message must contain.
BAD_DETR_TARGETS = {
    "label_past_num_labels": ([3], [[0.5, 0.5, 0.2, 0.2]], "num_labels"),
    "negative_label": ([-1], [[0.5, 0.5, 0.2, 0.2]], "num_labels"),
    "float_labels": ([0.0], [[0.5, 0.5, 0.2, 0.2]], "integers"),
    "box_past_the_edge": ([0], [[0.9, 0.5, 0.4, 0.2]], "outside"),
    "zero_height": ([0], [[0.5, 0.5, 0.2, 0.0]], "degenerate"),
    "nan_box": ([0], [[float("nan"), 0.5, 0.2, 0.2]], "non-finite"),
    "corner_format_with_x1_past_one": ([1], [[0.2, 0.2, 1.4, 0.6]], "outside"),
    "three_numbers": ([0], [[0.5, 0.5, 0.2]], "(num_boxes, 4)"),
}
