# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Detection mAP with pycocotools' `COCOeval` (the reference COCO implementation): mAP@0.3 and mAP@0.5, the paper's
Table 4 (right), and COCO's mAP@[.5:.95], all over 101 recall points, every object size and up to 100 detections per
image; and mAP@0.3 / mAP@0.5 with the class ignored, which tells localisation apart from classification."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The paper's thresholds, then COCO's ten from 0.5 to 0.95.
COCO_IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())
IOU_THRESHOLDS = (0.3, *COCO_IOU_THRESHOLDS)
METRIC_NAMES = ("map@0.3", "map@0.5", "map@[.5:.95]")
# The same boxes with the class ignored (COCOeval's useCats=0): how well the objects are found at all.
ANY_CLASS_METRIC_NAMES = ("any_class_map@0.3", "any_class_map@0.5")


def coco_map(
    ground_truth: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]], num_labels: int
) -> dict[str, float]:
    """mAP@0.3, mAP@0.5 and mAP@[.5:.95] (as fractions), the first two also with the class ignored
    (`any_class_map@0.3`, `any_class_map@0.5`), with `num_images` and `num_objects`.

    `ground_truth`: per image `{"image_id", "width", "height", "boxes": [[x0, y0, x1, y1], ...], "labels": [...]}` in
    pixels; `predictions`: per image `{"image_id", "boxes", "labels", "scores"}` in the same pixels (what
    `post_process_object_detection` returns, with the image id). Classes with no ground truth are left out of the
    mean, as COCOeval does.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations = [], []
    for image in ground_truth:
        images.append({"id": int(image["image_id"]), "width": int(image["width"]), "height": int(image["height"])})
        for box, label in zip(image["boxes"], image["labels"]):
            x0, y0, x1, y1 = map(float, box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": int(image["image_id"]),
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    detections = [
        {
            "image_id": int(image["image_id"]),
            "category_id": int(label),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "score": float(score),
        }
        for image in predictions
        for (x0, y0, x1, y1), label, score in zip(_rows(image["boxes"]), _rows(image["labels"]), _rows(image["scores"]))
    ]
    result = {"num_images": len(images), "num_objects": len(annotations)}
    if not annotations:
        raise ValueError("no ground-truth boxes to evaluate against")
    if not detections:
        return {**result, **dict.fromkeys((*METRIC_NAMES, *ANY_CLASS_METRIC_NAMES), 0.0)}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress
        truth = COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": label} for label in range(num_labels)],
        }
        truth.createIndex()
        found = truth.loadRes(detections)
        precision = {}
        for use_categories in (1, 0):
            evaluator = COCOeval(truth, found, iouType="bbox")
            evaluator.params.iouThrs = np.array(IOU_THRESHOLDS)
            evaluator.params.useCats = use_categories
            evaluator.evaluate()
            evaluator.accumulate()
            # [IoU threshold, recall point, class, area range (0 = all), max detections (-1 = 100)]; -1 = no data.
            precision[use_categories] = evaluator.eval["precision"][:, :, :, 0, -1]
    by_class, any_class = precision[1], precision[0]
    return {
        **result,
        "map@0.3": _mean_precision(by_class[0]),
        "map@0.5": _mean_precision(by_class[1]),
        "map@[.5:.95]": _mean_precision(by_class[1:]),
        "any_class_map@0.3": _mean_precision(any_class[0]),
        "any_class_map@0.5": _mean_precision(any_class[1]),
    }


def _mean_precision(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(values.mean()) if values.size else 0.0


def _rows(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)
