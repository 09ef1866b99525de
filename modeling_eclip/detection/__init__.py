# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Object-detection transfer of ECLIP (Sec. 4.2.5, Table 4 right): tools, not remote code (the model,
`EclipForObjectDetection`, and `EclipImageProcessor.post_process_object_detection` live in the flat files).

- `data.py`: the boxed images of a catalogue as DETR targets (labels = product categories), decoded by the package's
  decoder; unreadable images and images whose boxes cannot be labelled skipped, counted and the first few named (as
  pretraining skips bad images); the training batches with a restorable position;
- `metrics.py`: mAP@0.3, mAP@0.5 and mAP@[.5:.95] with pycocotools' COCOeval;
- `evaluate.py`: predictions, checkpoint evaluation and the Table 4 (right) command
  (`python -m modeling_eclip.detection`);
- `finetune.py`: fine-tuning with Accelerate (recipe, checkpoints, resume, trackers, export with model card, written
  before the evaluation).
"""

from .data import DetectionBatches, DetectionSample, category_labels, detection_target, load_detection_samples
from .evaluate import evaluate_checkpoint, evaluate_detection, format_table, predict
from .finetune import DetectionArguments, DetectionResult, finetune, parse_detection_arguments
from .metrics import METRIC_NAMES, coco_map

__all__ = [
    "METRIC_NAMES",
    "DetectionArguments",
    "DetectionBatches",
    "DetectionResult",
    "DetectionSample",
    "category_labels",
    "coco_map",
    "detection_target",
    "evaluate_checkpoint",
    "evaluate_detection",
    "finetune",
    "format_table",
    "load_detection_samples",
    "parse_detection_arguments",
    "predict",
]
