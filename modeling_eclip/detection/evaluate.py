# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Evaluate fine-tuned detection checkpoints on a catalogue split and print the paper's Table 4 (right):

    python -m modeling_eclip.detection --model outputs/detection-eclip/model \\
        --compare outputs/detection-itc-only/model --data data/demo --split test --output table4.json
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.shard_format import list_shards
from ..evaluation.embedding import check_positive_int
from ..modeling_eclip import EclipForObjectDetection
from ..processing_eclip import EclipImageProcessor
from .data import DETECTION_KINDS, DetectionSample, load_detection_samples, require_samples, sample_image
from .metrics import ANY_CLASS_METRIC_NAMES, METRIC_NAMES, coco_map

# The parameters fine-tuning adds to an ECLIP checkpoint.
DETECTION_HEADS = ("class_labels_classifier.", "bbox_predictor.")


@torch.no_grad()
def predict(
    model: EclipForObjectDetection,
    image_processor: Any,
    samples: Sequence[DetectionSample],
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Every slot's best class and box on each sample's own pixels (no score threshold: mAP ranks them all)."""
    check_positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predictions = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        pixel_values = image_processor(images=[sample_image(s) for s in chunk], return_tensors="pt")["pixel_values"]
        outputs = model(pixel_values=pixel_values.to(device, model.dtype))
        sizes = torch.tensor([[s.height, s.width] for s in chunk])
        results = image_processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
        for sample, result in zip(chunk, results):
            predictions.append({"image_id": sample.image_id, **{k: v.float().cpu() for k, v in result.items()}})
    model.train(was_training)
    return predictions


def evaluate_detection(
    model: EclipForObjectDetection, image_processor: Any, samples: Sequence[DetectionSample], batch_size: int = 32
) -> dict[str, float]:
    """mAP@0.3, mAP@0.5, mAP@[.5:.95] of the model on the samples (see `coco_map`)."""
    truth = [
        {"image_id": s.image_id, "width": s.width, "height": s.height, "boxes": s.boxes, "labels": s.labels}
        for s in samples
    ]
    return coco_map(truth, predict(model, image_processor, samples, batch_size), model.config.num_labels)


def evaluate_checkpoint(
    model_dir: str | os.PathLike, data_dir: str | os.PathLike, split: str = "test", batch_size: int = 32
) -> dict[str, Any]:
    """Loads a fine-tuned checkpoint (model and image processor) and evaluates it on a split's boxed images, with the
    checkpoint's own labels. Images that cannot be read or labelled (a category the checkpoint was not trained on,
    say) are skipped and counted in `skipped_images`; a split with none left is a `ValueError` naming it."""
    model, loading = EclipForObjectDetection.from_pretrained(model_dir, dtype=torch.float32, output_loading_info=True)
    if any(key.startswith(DETECTION_HEADS) for key in loading["missing_keys"]):
        # Loading made them up: random heads and default labels would give a meaningless mAP.
        raise ValueError(
            f"{model_dir} has no detection heads (it is not a fine-tuned EclipForObjectDetection); fine-tune it "
            "first with examples/finetune_detection.py and evaluate that export"
        )
    image_processor = EclipImageProcessor.from_pretrained(model_dir)
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    samples, skipped = load_detection_samples(data_dir, split, label_names, DETECTION_KINDS)
    remedy = "evaluate on a split whose customer and ad images are readable and boxed with the checkpoint's labels"
    require_samples(samples, skipped, split, data_dir, remedy)
    return {**evaluate_detection(model, image_processor, samples, batch_size), "skipped_images": dict(skipped)}


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """The paper's Table 4 (right) as Markdown: one row per checkpoint, mAP in percent, then the class-agnostic
    mAP."""
    lines = [
        "| checkpoint | mAP@0.3 | mAP@0.5 | mAP@[.5:.95] | any class: mAP@0.3 | any class: mAP@0.5 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, metrics in rows.items():
        values = [f"{100 * metrics[key]:.2f}" for key in (*METRIC_NAMES, *ANY_CLASS_METRIC_NAMES)]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def row_name(model_dir: str | os.PathLike) -> str:
    """A checkpoint's row: its run folder when the export is the usual `<run>/model`."""
    path = Path(model_dir).resolve()
    return path.parent.name if path.name == "model" else path.name


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description="Detection mAP (Table 4, right) of fine-tuned ECLIP checkpoints.")
    parser.add_argument("--model", required=True, help="A fine-tuned EclipForObjectDetection export.")
    parser.add_argument("--compare", nargs="*", default=[], help="More exports, printed as further rows.")
    parser.add_argument("--data", required=True, help="A catalogue in the shard format (e.g. data/demo).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output", default=None, help="Write the metrics as JSON here.")
    args = parser.parse_args(argv)
    check_positive_int("batch_size", args.batch_size)
    if Path(args.data).is_dir() and not list_shards(args.data, args.split):
        raise FileNotFoundError(
            f"--data {args.data} has no {args.split!r} split (data/{args.split}-*.parquet): pass a catalogue in the "
            "shard format and one of its splits with --split"
        )
    rows = {}
    for model_dir in [args.model, *args.compare]:
        if not (Path(model_dir) / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a saved model (no config.json)")
        rows[row_name(model_dir)] = evaluate_checkpoint(model_dir, args.data, args.split, args.batch_size)
    first = next(iter(rows.values()))
    print(
        f"Detection on the '{args.split}' split of {args.data}: {first['num_images']} images, "
        f"{first['num_objects']} objects"
    )
    print(format_table(rows))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(rows, indent=2, sort_keys=True))
    return rows
