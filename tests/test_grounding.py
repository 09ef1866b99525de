# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Grounding helpers: IoU and box scores on hand-made maps, proposals, score maps of a tiny model, overlays."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from modeling_eclip.grounding_eclip import (
    box_iou,
    candidate_boxes,
    grounding_score_maps,
    overlay_heatmap,
    rank_boxes,
    score_boxes,
)


def peaked_map(height, width, box, value=1.0, background=0.0):
    score_map = torch.full((height, width), background)
    x0, y0, x1, y1 = box
    score_map[y0:y1, x0:x1] = value
    return score_map


@pytest.mark.parametrize(
    ("box_a", "box_b", "expected"),
    [
        ([0, 0, 2, 2], [0, 0, 2, 2], 1.0),
        ([0, 0, 2, 2], [1, 0, 3, 2], 2 / 6),  # half overlap: intersection 2, union 6
        ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),  # containment
        ([0, 0, 2, 2], [2, 0, 4, 2], 0.0),  # touching: x1 is exclusive, no shared pixel
        ([0, 0, 2, 2], [5, 5, 6, 6], 0.0),
        ([0.5, 0.0, 2.5, 1.0], [0.0, 0.0, 1.5, 1.0], 1.0 / 2.5),
    ],
)
def test_box_iou_hand_cases(box_a, box_b, expected):
    assert box_iou(box_a, box_b).item() == pytest.approx(expected)


def test_box_iou_is_pairwise_and_rejects_empty_boxes():
    iou = box_iou([[0, 0, 2, 2], [0, 0, 4, 4]], [[0, 0, 2, 2], [1, 1, 3, 3], [10, 10, 12, 12]])
    assert iou.shape == (2, 3)
    torch.testing.assert_close(iou[1, 0], torch.tensor(0.25, dtype=iou.dtype))
    with pytest.raises(ValueError, match=r"boxes_b\[0\].*empty"):
        box_iou([[0, 0, 2, 2]], [[3, 0, 3, 2]])
    with pytest.raises(ValueError, match="shape"):
        box_iou([[0, 0, 2]], [[0, 0, 2, 2]])


def test_score_boxes_hand_values():
    score_map = peaked_map(4, 4, (0, 0, 2, 2))
    scores = score_boxes(score_map, [[0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 1, 1], [2, 2, 4, 4]])
    # inside mean - outside mean: 1 - 0; the whole map vs its own mean: 0; 1 - 3/15; 0 - 4/12
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 0.8, -1 / 3]))


@pytest.mark.parametrize("peak", [(30, 20, 45, 32), (5, 8, 70, 50)], ids=["small-peak", "large-peak"])
def test_map_peaked_in_one_box_ranks_it_first(peak):
    """Neither the largest nor the smallest candidate wins by construction: the box that matches the peak does."""
    score_map = peaked_map(60, 80, peak, value=0.9, background=0.05)
    x0, y0, x1, y1 = peak
    boxes = [
        [0, 0, 80, 60],  # whole image (largest)
        [x0 - 4, y0 - 4, x1 + 4, y1 + 4],  # contains the peak
        [x0 + 3, y0 + 3, x0 + 6, y0 + 6],  # tiny box inside the peak (smallest)
        [x0 + 5, y0, x1 + 5, y1],  # shifted
        list(peak),
        [0, 0, 10, 10],
    ]
    order = rank_boxes(score_map, boxes)
    assert order[0].item() == 4
    assert set(order.tolist()) == set(range(len(boxes)))


def test_score_boxes_rejects_bad_input():
    score_map = torch.rand(10, 12)
    with pytest.raises(ValueError, match="outside"):
        score_boxes(score_map, [[12, 0, 15, 5]])
    with pytest.raises(ValueError, match="height, width"):
        score_boxes(torch.rand(1, 10, 12), [[0, 0, 2, 2]])


def test_candidate_boxes_are_inside_the_image_and_exclude_the_true_box():
    width, height = 100, 80
    box = torch.tensor([60.0, 50.0, 98.0, 80.0])  # touches the bottom edge
    candidates = candidate_boxes(box, (width, height), torch.Generator().manual_seed(0), num_jittered=8)
    # 8 jittered + 7x7 windows at 1/4 + 3x3 at 1/2 + 2x2 at 3/4
    assert candidates.shape == (8 + 49 + 9 + 4, 4)
    assert (candidates[:, :2] >= 0).all()
    assert (candidates[:, 2] <= width).all() and (candidates[:, 3] <= height).all()
    assert (candidates[:, 2:] > candidates[:, :2]).all()
    assert not (candidates == box).all(-1).any()
    # The windows reach the far edges.
    assert (candidates[8:, 2] == width).any() and (candidates[8:, 3] == height).any()
    # The jittered copies are imperfect to different degrees, so Acc@0.5 and Acc@0.7 can differ.
    iou = box_iou(box, candidates[:8])[0]
    assert (iou < 1).all() and iou.max() > 0.7 and iou.min() < 0.7
    again = candidate_boxes(box, (width, height), torch.Generator().manual_seed(0), num_jittered=8)
    torch.testing.assert_close(candidates, again)


def test_candidate_boxes_drop_a_window_equal_to_the_true_box():
    candidates = candidate_boxes([0, 0, 50, 40], (100, 80), torch.Generator(), num_jittered=0, window_fractions=[0.5])
    assert candidates.shape == (3 * 3 - 1, 4)
    with pytest.raises(ValueError, match="window_fractions"):
        candidate_boxes([0, 0, 50, 40], (100, 80), torch.Generator(), window_fractions=[1.5])


def test_jittered_boxes_at_the_image_corner_keep_a_pixel():
    candidates = candidate_boxes([98, 78, 100, 80], (100, 80), torch.Generator().manual_seed(3), window_fractions=[])
    assert candidates.shape == (8, 4)
    assert (candidates[:, 2:] > candidates[:, :2]).all() and (candidates[:, :2] <= torch.tensor([99, 79])).all()


def test_overlay_heatmap_keeps_the_image_size_and_draws_boxes():
    image = Image.new("RGB", (40, 30), (128, 128, 128))
    score_map = peaked_map(6, 8, (2, 2, 4, 4))  # resized to the image
    overlay = overlay_heatmap(image, score_map, boxes=[[10, 5, 20, 15]])
    assert overlay.size == image.size and overlay.mode == "RGB"
    assert overlay.getpixel((10, 10)) == (0, 255, 0)  # left edge of the box, drawn in green
    assert overlay.getpixel((0, 0)) != overlay.getpixel((15, 12))  # low and high scores get different colours
    flat = overlay_heatmap(image, torch.zeros(30, 40))
    assert flat.size == image.size


def test_grounding_score_maps_follow_each_image_size(model, processor):
    images = [Image.new("RGB", (48, 32), (200, 30, 30)), Image.new("RGB", (20, 36), (30, 30, 200))]
    images[0].paste((20, 200, 20), (0, 0, 16, 16))
    texts = ["red shoe", "a blue cotton t-shirt"]
    maps = grounding_score_maps(model, processor, images, texts=texts, batch_size=2)
    assert [tuple(score_map.shape) for score_map in maps] == [(32, 48), (36, 20)]
    with torch.no_grad():
        grids = model.get_grounding_map(**processor(images=images, text=texts))
    for image, grid, score_map in zip(images, grids, maps):
        width, height = image.size
        expected = F.interpolate(grid[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(score_map, expected)
        assert score_map.min() >= 0 and score_map.max() <= 1
    one_by_one = grounding_score_maps(model, processor, images, texts=texts, batch_size=1)
    for batched, single in zip(maps, one_by_one):
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_grounding_score_maps_image_prompts_and_bad_input(model, processor):
    scene = Image.new("RGB", (40, 40), "white")
    product = Image.new("RGB", (16, 16), "red")
    by_image = grounding_score_maps(model, processor, scene, prompt_images=product)
    by_itself = grounding_score_maps(model, processor, [scene])
    assert by_image[0].shape == by_itself[0].shape == (40, 40)
    assert not torch.allclose(by_image[0], by_itself[0])
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        grounding_score_maps(model, processor, [scene, scene], texts=["red shoe"])
    with pytest.raises(ValueError, match="not both"):
        grounding_score_maps(model, processor, [scene], texts=["x"], prompt_images=[product])
    with pytest.raises(ValueError, match=r"Cannot decode images\[1\]"):
        grounding_score_maps(model, processor, [scene, b"not an image"], texts=["a", "b"])
