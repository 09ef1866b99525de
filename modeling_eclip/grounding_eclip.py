# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot product grounding (paper Sec. 4.2.4, Fig. 4a): score maps, box ranking, candidate boxes, heat maps.

The positive slot's assignment over the patch tokens (Eq. 3, `EclipModel.get_grounding_map`) says which share of
every patch the prompted product collects. Upsampled to the image it is the score map S of Sec. 4.2.4; candidate
regions are ranked by it. Boxes are `(x0, y0, x1, y1)` pixel boxes of the original image with exclusive `x1` / `y1`
(the shard format's convention), so a box covers the pixel columns `x0 .. x1 - 1`.

Remote-code safe: imports only torch, numpy, PIL and sibling modules.
"""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .processing_eclip import check_model_inputs, check_texts, to_rgb_image, to_rgb_images

DEFAULT_NUM_JITTERED = 8
# Each jittered edge moves by up to this fraction of the box side; the per-box magnitude is drawn uniformly from the
# range, so the jittered copies span IoUs from ~0.3 to ~0.9 with the true box and Acc@0.5 differs from Acc@0.7.
DEFAULT_JITTER_RANGE = (0.05, 0.35)
DEFAULT_WINDOW_FRACTIONS = (0.25, 0.5, 0.75)
# Boxes drawn by `overlay_heatmap`, in order: the first is usually the true or the top-ranked box.
BOX_COLOURS = ((0, 255, 0), (255, 255, 255), (255, 0, 255), (0, 255, 255))


def _as_boxes(boxes: Any, name: str) -> torch.Tensor:
    """`(M, 4)` float64 boxes from a tensor, array or nested sequence; a single box becomes `(1, 4)`."""
    try:
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64) if not torch.is_tensor(boxes) else boxes)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be (M, 4) numeric boxes (x0, y0, x1, y1): {error}") from None
    boxes = boxes.to(torch.float64)
    if boxes.dim() == 1:
        boxes = boxes.unsqueeze(0)
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or boxes.shape[0] == 0:
        raise ValueError(f"{name} must be (M, 4) boxes (x0, y0, x1, y1), M >= 1, got shape {tuple(boxes.shape)}.")
    not_finite = ~torch.isfinite(boxes).all(-1)
    if not_finite.any():
        index = int(not_finite.nonzero()[0])
        raise ValueError(f"{name}[{index}] = {boxes[index].tolist()} has NaN or infinite coordinates.")
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if empty.any():
        index = int(empty.nonzero()[0])
        raise ValueError(f"{name}[{index}] = {boxes[index].tolist()} is empty: boxes need x0 < x1 and y0 < y1.")
    return boxes


def _check_score_map(score_map: torch.Tensor) -> None:
    if score_map.dim() != 2 or 0 in score_map.shape:
        raise ValueError(f"score_map must be (height, width), got shape {tuple(score_map.shape)}.")
    if not torch.isfinite(score_map).all():
        raise ValueError("score_map has NaN or infinite values.")


def box_iou(boxes_a: Any, boxes_b: Any) -> torch.Tensor:
    """Intersection over union of every pair, `(N, M)`, of `(x0, y0, x1, y1)` boxes with exclusive `x1` / `y1`."""
    boxes_a, boxes_b = _as_boxes(boxes_a, "boxes_a"), _as_boxes(boxes_b, "boxes_b")
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).prod(-1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).prod(-1)
    return intersection / (area_a[:, None] + area_b[None, :] - intersection)


@torch.no_grad()
def grounding_score_maps(
    model: Any,
    processor: Any,
    images: Any,
    texts: str | Sequence[str] | None = None,
    prompt_images: Any = None,
    batch_size: int = 32,
) -> list[torch.Tensor]:
    """Score maps S (Sec. 4.2.4) of the prompted product over each image, each `(height, width)` of that image.

    The prompt is a product text per image (`texts`), or an image of the product per image (`prompt_images`: "find
    this product in that scene"), or, with neither, the image itself (its most salient product). The map is the
    positive slot's share of every patch in the last decoder block (Eq. 3), bilinearly upsampled from the patch grid
    to the image's own pixel size: the processor resizes the whole image to a square without cropping, so the patch
    grid spans the original image and stretches back onto it. `model` should be in eval mode.
    """
    if texts is not None and prompt_images is not None:
        raise ValueError("Pass either `texts` or `prompt_images` as the grounding prompt, not both.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    images = to_rgb_images(images, "images")
    # Prompts are checked up front, so errors name their position in the call, not in a batch.
    prompts, prompt_name = None, None
    if texts is not None:
        prompts, prompt_name = check_texts(texts, "texts"), "texts"
    elif prompt_images is not None:
        prompts, prompt_name = to_rgb_images(prompt_images, "prompt_images"), "prompt_images"
    if prompts is not None and len(prompts) != len(images):
        raise ValueError(f"Got {len(images)} images but {len(prompts)} {prompt_name}; pass one per image.")

    maps = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        batch_prompts = None if prompts is None else prompts[start : start + batch_size]
        inputs = processor(
            images=batch,
            text=batch_prompts if texts is not None else None,
            prompt_images=batch_prompts if prompt_images is not None else None,
        )
        check_model_inputs(inputs, model.config)  # on the host: the model's forward reads no value back
        inputs = inputs.to(model.device, dtype=model.dtype)  # casts only the floating-point inputs
        grids = model.get_grounding_map(**inputs).float()
        maps += [upsample_score_map(grid, image) for grid, image in zip(grids, batch)]
    return maps


def upsample_score_map(grid: torch.Tensor, image: Image.Image) -> torch.Tensor:
    """A patch-grid score map `(side, side)` stretched bilinearly onto the image's own `(height, width)`, on the CPU."""
    width, height = image.size
    return F.interpolate(grid[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0].cpu()


def _pixel_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rounds boxes to integer pixel edges inside the map, keeping at least one pixel per box."""
    limits = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    edges = torch.minimum(boxes.round().clamp(min=0), limits).long()
    edges[:, 2:] = torch.maximum(edges[:, 2:], edges[:, :2] + 1)
    edges[:, :2] = torch.minimum(edges[:, :2], edges[:, 2:] - 1)
    return edges


def score_boxes(score_map: torch.Tensor, boxes: Any) -> torch.Tensor:
    """The grounding score of each box, `(M,)`: mean of S inside the box minus mean of S outside it.

    Why this score: the mean inside alone prefers the smallest box on the peak and the mass inside alone prefers
    the largest box. The contrast is highest for the box that holds the high-scoring region and nothing else: a
    larger box dilutes its inside mean, a smaller one leaves high scores outside. A box covering the whole map is
    compared with the whole map's mean and scores 0. Sums come from an integral image, so many boxes are cheap.
    """
    _check_score_map(score_map)
    boxes = _as_boxes(boxes, "boxes")
    height, width = score_map.shape
    outside_image = (boxes[:, 0] >= width) | (boxes[:, 1] >= height) | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
    if outside_image.any():
        index = int(outside_image.nonzero()[0])
        raise ValueError(f"boxes[{index}] = {boxes[index].tolist()} lies outside the {width}x{height} score map.")
    integral = F.pad(score_map.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    x0, y0, x1, y1 = _pixel_boxes(boxes, height, width).unbind(-1)
    inside_sum = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    inside_area = ((x1 - x0) * (y1 - y0)).double()
    total_sum, total_area = integral[-1, -1], float(height * width)
    outside_area = total_area - inside_area
    whole_mean = total_sum / total_area
    outside_mean = torch.where(
        outside_area > 0, (total_sum - inside_sum) / outside_area.clamp(min=1), whole_mean.expand_as(inside_sum)
    )
    return (inside_sum / inside_area - outside_mean).float()


def rank_boxes(score_map: torch.Tensor, boxes: Any) -> torch.Tensor:
    """Indices of `boxes` sorted by `score_boxes`, best first (ties keep the given order)."""
    return torch.argsort(score_boxes(score_map, boxes), descending=True, stable=True)


def candidate_boxes(
    box: Any,
    image_size: tuple[int, int],
    generator: torch.Generator,
    num_jittered: int = DEFAULT_NUM_JITTERED,
    window_fractions: Sequence[float] = DEFAULT_WINDOW_FRACTIONS,
    jitter_range: tuple[float, float] = DEFAULT_JITTER_RANGE,
) -> torch.Tensor:
    """Imperfect region proposals around a true box, `(M, 4)`, standing in for the paper's region proposal network.

    Returns `num_jittered` copies of `box` whose edges each move by up to `m` times the box side (`m` drawn per copy
    from `jitter_range`), then sliding windows of `f` times the image's width and height for each `f` in
    `window_fractions`, at a stride of half a window and flush with the right and bottom edges. All boxes are clipped
    to the image (`image_size` is `(width, height)`, as PIL gives it). The true box itself is never a candidate:
    a proposal that coincides with it exactly is left out, so grounding has to find the best imperfect box.
    """
    if isinstance(num_jittered, bool) or not isinstance(num_jittered, int) or num_jittered < 0:
        raise ValueError(f"num_jittered must be an int >= 0, got {num_jittered!r}.")
    width, height = image_size
    if width < 2 or height < 2:
        raise ValueError(f"image_size must be (width, height) of at least 2x2 pixels, got {image_size}.")
    true_box = _as_boxes(box, "box")[0]
    low, high = jitter_range
    if not 0 < low <= high:
        raise ValueError(f"jitter_range must be (low, high) with 0 < low <= high, got {jitter_range}.")
    limits = torch.tensor([width, height, width, height], dtype=torch.float64)
    candidates = []

    if num_jittered > 0:
        sides = (true_box[2:] - true_box[:2]).repeat(2)
        magnitude = low + (high - low) * torch.rand(num_jittered, 1, generator=generator, dtype=torch.float64)
        offsets = (2 * torch.rand(num_jittered, 4, generator=generator, dtype=torch.float64) - 1) * magnitude * sides
        jittered = torch.minimum((true_box + offsets).clamp(min=0), limits)
        # Clipping may collapse a box onto an image edge; keep at least one pixel inside the image.
        jittered[:, :2] = torch.minimum(jittered[:, :2], limits[:2] - 1)
        jittered[:, 2:] = torch.maximum(jittered[:, 2:], jittered[:, :2] + 1)
        candidates.append(jittered)

    for fraction in window_fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"window_fractions must be in (0, 1], got {fraction}.")
        window_width, window_height = fraction * width, fraction * height
        xs = _window_starts(width, window_width)
        ys = _window_starts(height, window_height)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        starts = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1)
        ends = starts + torch.tensor([window_width, window_height], dtype=torch.float64)
        candidates.append(torch.cat([starts, ends], dim=-1))

    if not candidates:
        raise ValueError("No candidates: pass num_jittered > 0 or at least one window fraction.")
    candidates = torch.cat(candidates)
    return candidates[~(candidates == true_box).all(-1)].float()


def _window_starts(length: int, window: float) -> torch.Tensor:
    """Evenly spaced window starts at a stride of at most half a window, the last flush with the far edge."""
    count = math.ceil((length - window) / (window / 2) - 1e-9) + 1
    return torch.linspace(0.0, length - window, count, dtype=torch.float64)


def _heat_colours(values: np.ndarray) -> np.ndarray:
    """A jet-like colour map of values in [0, 1] (blue, cyan, yellow, red), `(..., 3)` floats in [0, 1]."""
    return np.stack([np.clip(1.5 - np.abs(4 * values - offset), 0, 1) for offset in (3, 2, 1)], axis=-1)


def overlay_heatmap(image: Any, score_map: torch.Tensor, boxes: Any = None, alpha: float = 0.5) -> Image.Image:
    """The image with the score map blended on top as a heat map (Fig. 4a), and optional boxes outlined.

    The map is min-max normalised and resized to the image if its size differs. Boxes are drawn in the order given,
    the first in green (`BOX_COLOURS`).
    """
    image = to_rgb_image(image)
    width, height = image.size
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
    score_map = torch.as_tensor(score_map, dtype=torch.float32)
    _check_score_map(score_map)
    if tuple(score_map.shape) != (height, width):
        score_map = F.interpolate(score_map[None, None], size=(height, width), mode="bilinear", align_corners=False)
        score_map = score_map[0, 0]
    values = score_map.numpy().astype(np.float64)
    spread = values.max() - values.min()
    values = (values - values.min()) / spread if spread > 0 else np.zeros_like(values)
    heat = _heat_colours(values) * 255.0
    blended = (1 - alpha) * np.asarray(image, dtype=np.float64) + alpha * heat
    overlay = Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8))
    if boxes is not None:
        draw = ImageDraw.Draw(overlay)
        line_width = max(1, round(min(width, height) / 100))
        for index, (x0, y0, x1, y1) in enumerate(_as_boxes(boxes, "boxes").tolist()):
            # PIL rectangles include their end pixel; our boxes exclude it.
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=BOX_COLOURS[index % len(BOX_COLOURS)], width=line_width)
    return overlay


__all__ = [
    "box_iou",
    "candidate_boxes",
    "grounding_score_maps",
    "overlay_heatmap",
    "rank_boxes",
    "score_boxes",
]
