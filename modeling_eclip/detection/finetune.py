# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune ECLIP for object detection (Sec. 4.2.5) with Accelerate, with the pretraining script's habits: a recipe
YAML plus flags (`DetectionArguments`), atomic `checkpoint-<step>` directories with exact resumption (`--resume
latest`), `metrics.jsonl` and Accelerate's trackers (`--report_to`), and at the end the mAP evaluation on the held-out
products' images and an export with its model card.

The model starts from any ECLIP checkpoint (`EclipForObjectDetection.from_pretrained`: towers, projections and decoder
load, the heads are new); the text tower is frozen, detection never runs it. The image tower trains at
`backbone_learning_rate`, the rest at `learning_rate`, as DETR trains its backbone.

Every image of both splits is read (and bad ones skipped and counted) before the model is built, so a missing or
unusable evaluation split stops the run before any compute; the export is written before the evaluation, so an
evaluation that fails loses no trained model (as in pretraining).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed

from ..data.shard_format import list_shards
from ..data.source import CatalogueSource
from ..modeling_eclip import EclipForObjectDetection
from ..processing_eclip import EclipImageProcessor
from ..training.arguments import MIXED_PRECISIONS, check_output_dir, load_recipe, parse_recipe_arguments
from ..training.checkpoints import METRICS_FILE, CheckpointManager, append_metrics, remove_run_files, write_json
from ..training.export import describe_dataset
from ..training.fields import NON_NEGATIVE, POSITIVE, check_ranges, clear_none_strings
from ..training.results import NonFiniteLossError, PretrainingResult
from ..training.schedule import check_lr_scheduler, make_lr_scheduler
from ..training.tracking import check_report_to, log_scalars, parse_report_to, tracker_init_kwargs
from .data import (
    DETECTION_KINDS,
    DetectionBatches,
    DetectionSample,
    category_labels,
    describe_skips,
    load_detection_samples,
    require_samples,
)
from .evaluate import evaluate_detection
from .metrics import METRIC_NAMES

EXPORT_DIR = "model"
RESULTS_FILE = "results.json"
LOGGED_TERMS = ("loss", "loss_ce", "loss_bbox", "loss_giou", "cardinality_error")


@dataclass
class DetectionArguments:
    """The fine-tuning recipe; every field is also a command-line flag."""

    model_name_or_path: str = field(
        default="outputs/eclip-tiny-demo/model", metadata={"help": "The ECLIP checkpoint to start from."}
    )
    data_dir: str = field(default="data/demo", metadata={"help": "A catalogue in the shard format, with boxes."})
    output_dir: str = field(default="outputs/detection-eclip", metadata={"help": "Run folder (checkpoints, export)."})
    train_split: str = "train"
    eval_split: str = "test"
    image_kinds: list[str] = field(
        default_factory=lambda: list(DETECTION_KINDS), metadata={"help": "Image kinds whose boxes are targets."}
    )
    seed: int = 0
    max_steps: Annotated[int, POSITIVE] = 300
    per_device_train_batch_size: Annotated[int, POSITIVE] = 16
    learning_rate: Annotated[float, POSITIVE] = field(
        default=1e-4, metadata={"help": "Decoder, projections, queries and the new heads."}
    )
    backbone_learning_rate: Annotated[float, POSITIVE] = field(
        default=1e-5, metadata={"help": "The image tower (DETR's lr_backbone)."}
    )
    weight_decay: Annotated[float, NON_NEGATIVE] = 1e-4
    lr_scheduler_type: str = "linear"
    warmup_steps: Annotated[int, NON_NEGATIVE] = 0
    max_grad_norm: Annotated[float, NON_NEGATIVE] = 0.1
    auxiliary_loss: bool = field(default=True, metadata={"help": "The DETR loss after every decoder block too."})
    mixed_precision: str | None = field(default=None, metadata={"help": f"One of {MIXED_PRECISIONS} or none."})
    logging_steps: Annotated[int, POSITIVE] = 10
    save_steps: Annotated[int, NON_NEGATIVE] = 100
    save_total_limit: Annotated[int, POSITIVE] = 2
    eval_batch_size: Annotated[int, POSITIVE] = 32
    evaluate_at_end: bool = True
    resume: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint-<step> folder."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in a non-empty output_dir (an earlier run's files are deleted)."}
    )
    report_to: str = field(default="none", metadata={"help": "Trackers, as TrainingArguments.report_to takes them."})
    run_name: str | None = None
    tracker_project: str = "eclip-detection"
    max_consecutive_nonfinite: Annotated[int, POSITIVE] = 5

    def __post_init__(self) -> None:
        clear_none_strings(self)  # e.g. --resume none


def load_detection_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe YAML (a path or the name of a shipped one) as the pretraining recipes are read: unknown keys raise,
    `base_recipe: <name>` loads that recipe first and this file's keys replace its values."""
    return load_recipe(path, arguments_class=DetectionArguments)


def parse_detection_arguments(argv: list[str] | None = None) -> DetectionArguments:
    """`--config recipe.yaml` sets the defaults, every other flag overrides them."""
    return parse_recipe_arguments(DetectionArguments, argv, "Fine-tune ECLIP for object detection.")


def check_detection_arguments(args: DetectionArguments) -> list[str]:
    """Every check that can fail before compute; returns the trackers. Raises naming the field."""
    check_output_dir(args.output_dir, args.resume, args.overwrite_output_dir)
    check_ranges(args)
    if args.warmup_steps >= args.max_steps:
        raise ValueError(f"warmup_steps ({args.warmup_steps}) must be smaller than max_steps ({args.max_steps})")
    check_lr_scheduler(args.lr_scheduler_type, args.warmup_steps, args.max_steps)
    if args.mixed_precision is not None and args.mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {args.mixed_precision!r}")
    unknown_kinds = sorted(set(args.image_kinds) - {"catalog", *DETECTION_KINDS})
    if unknown_kinds or not args.image_kinds:
        raise ValueError(f"image_kinds must name kinds of the shard format, got {args.image_kinds}")
    if not (Path(args.model_name_or_path) / "config.json").is_file():
        raise FileNotFoundError(f"model_name_or_path {args.model_name_or_path} is not a saved ECLIP model")
    if not list_shards(args.data_dir, args.train_split):
        CatalogueSource(args.data_dir)  # names an old-format or missing folder
        raise FileNotFoundError(f"data_dir {args.data_dir} has no {args.train_split} split (data/{args.train_split}-*)")
    if args.evaluate_at_end and importlib.util.find_spec("pycocotools") is None:
        raise ImportError(
            "the end-of-training mAP needs pycocotools (pip install -e '.[eval]'), which is not installed; install it "
            "or pass --evaluate_at_end false"
        )
    if args.evaluate_at_end and not list_shards(args.data_dir, args.eval_split):
        # Checked before training: an evaluation that cannot run would otherwise fail after all the compute.
        raise FileNotFoundError(
            f"eval_split {args.eval_split!r}: data_dir {args.data_dir} has no such split (data/{args.eval_split}-*); "
            "name another split with --eval_split, or pass --evaluate_at_end false"
        )
    trackers = parse_report_to(args.report_to)
    check_report_to(trackers)
    return trackers


# What a fine-tuning run returns: the same fields as a pretraining run's (step, export_dir, metrics, summary).
DetectionResult = PretrainingResult


def finetune(args: DetectionArguments) -> DetectionResult:
    """Runs (or resumes) one fine-tuning; returns the final step, the export folder, the mAP and the run summary."""
    trackers = check_detection_arguments(args)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=not torch.accelerator.is_available(),
        mixed_precision=args.mixed_precision,
        log_with=trackers or None,
        project_dir=str(output_dir),
    )
    set_seed(args.seed)
    label_names = category_labels(args.data_dir)
    train_samples, skipped, eval_samples, eval_skipped = load_run_samples(args, label_names, accelerator.num_processes)
    # Only once the data is known to be usable: a run refused for its data leaves the earlier run's files in place.
    if args.overwrite_output_dir and args.resume is None and accelerator.is_main_process:
        remove_run_files(output_dir, (METRICS_FILE, RESULTS_FILE, EXPORT_DIR))  # the earlier run's, nothing else
    accelerator.wait_for_everyone()
    output_dir.mkdir(parents=True, exist_ok=True)
    model = EclipForObjectDetection.from_pretrained(
        args.model_name_or_path,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)},
        auxiliary_loss=args.auxiliary_loss,
        dtype=torch.float32,
    )
    for parameter in model.text_parameters():
        parameter.requires_grad_(False)
    image_processor = EclipImageProcessor.from_pretrained(args.model_name_or_path)
    batches = DetectionBatches(
        train_samples,
        image_processor,
        len(label_names),
        args.per_device_train_batch_size,
        args.seed,
        accelerator.process_index,
        accelerator.num_processes,
    )
    backbone = {id(p) for p in model.eclip.vision_model.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trainable if id(p) in backbone], "lr": args.backbone_learning_rate},
            {"params": [p for p in trainable if id(p) not in backbone], "lr": args.learning_rate},
        ],
        weight_decay=args.weight_decay,
    )
    scheduler = make_lr_scheduler(optimizer, args.lr_scheduler_type, args.warmup_steps, args.max_steps)
    # The schedule is stepped once per optimiser step here and saved as JSON by the checkpoint manager (as in
    # pretraining): Accelerate would pickle a prepared one.
    model, optimizer = accelerator.prepare(model, optimizer)
    checkpoints = CheckpointManager(
        accelerator, output_dir, args.save_total_limit, {"recipe": dataclasses.asdict(args)}
    )
    checkpoints.remove_incomplete()
    state = {"step": 0, "skipped_nonfinite": 0, "train_seconds": 0.0}
    if args.resume == "latest":
        resume_path = checkpoints.latest_intact()  # damaged newer checkpoints are named and skipped
    else:
        resume_path = Path(args.resume) if args.resume else None
    if resume_path is not None:
        state.update(checkpoints.load(resume_path, batches, scheduler))
        accelerator.print(f"resumed from {resume_path} at step {state['step']}")
    run_name = args.run_name or output_dir.name
    accelerator.init_trackers(
        args.tracker_project,
        config={k: v for k, v in dataclasses.asdict(args).items() if not isinstance(v, list)},
        init_kwargs=tracker_init_kwargs(trackers, run_name),
    )

    device = accelerator.device
    iterator = iter(batches)
    window: Counter = Counter()
    window_steps, consecutive_bad = 0, 0
    started = time.perf_counter() - state["train_seconds"]
    model.train()
    while state["step"] < args.max_steps:
        batch = next(iterator)
        labels = [{key: value.to(device) for key, value in target.items()} for target in batch["labels"]]
        outputs = model(pixel_values=batch["pixel_values"].to(device), labels=labels)
        loss = outputs.loss
        finite = torch.isfinite(loss.detach()).float()
        if accelerator.num_processes > 1:
            finite = accelerator.reduce(finite, reduction="min")
        if finite.item() < 1:
            # A non-finite loss on any process skips the step everywhere; too many in a row stop the run.
            optimizer.zero_grad(set_to_none=True)
            state["skipped_nonfinite"] += 1
            consecutive_bad += 1
            if consecutive_bad >= args.max_consecutive_nonfinite:
                raise NonFiniteLossError(f"{consecutive_bad} non-finite losses in a row at step {state['step']}")
            continue
        consecutive_bad = 0
        accelerator.backward(loss)
        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        window_steps += 1
        window["loss"] += loss.item()
        for name in LOGGED_TERMS[1:]:
            window[name] += outputs.loss_dict[name].item()
        if state["step"] % args.logging_steps == 0 or state["step"] == args.max_steps:
            elapsed = time.perf_counter() - started
            entry = {name: window[name] / window_steps for name in LOGGED_TERMS}
            entry.update(learning_rate=scheduler.get_last_lr()[-1], elapsed_seconds=elapsed)
            if accelerator.is_main_process:
                append_metrics(output_dir / METRICS_FILE, {"step": state["step"], **entry})
                accelerator.print(
                    f"step {state['step']}/{args.max_steps} "
                    + " ".join(f"{name} {value:.4f}" for name, value in entry.items())
                )
            log_scalars(accelerator.trackers, {f"train/{k}": v for k, v in entry.items()}, state["step"])
            window.clear()
            window_steps = 0
        if args.save_steps and state["step"] % args.save_steps == 0 and state["step"] < args.max_steps:
            state["train_seconds"] = time.perf_counter() - started
            checkpoints.save(state["step"], batches, scheduler, state)
    state["train_seconds"] = time.perf_counter() - started
    last_checkpoint = checkpoints.save(state["step"], batches, scheduler, state)

    unwrapped = accelerator.unwrap_model(model)
    summary = {
        "step": state["step"],
        "global_batch_size": args.per_device_train_batch_size * accelerator.num_processes,
        "world_size": accelerator.num_processes,
        "device": str(device),
        "train_seconds": state["train_seconds"],
        "skipped_nonfinite": state["skipped_nonfinite"],
        "train_images": len(train_samples),
        "skipped_train_images": dict(skipped),
        "skipped_eval_images": dict(eval_skipped),
        "labels": label_names,
    }
    metrics: dict[str, float] = {}
    export_dir, evaluation_error = None, None
    if accelerator.is_main_process:
        # The export first: an evaluation that fails (a full disk, say) must not lose the trained model.
        export_dir = export_detection(unwrapped, image_processor, output_dir / EXPORT_DIR, args, metrics, summary)
        if args.evaluate_at_end:
            try:
                evaluation_started = time.perf_counter()
                metrics = evaluate_detection(unwrapped, image_processor, eval_samples, args.eval_batch_size)
                metrics["eval_seconds"] = time.perf_counter() - evaluation_started
                log_scalars(accelerator.trackers, {f"eval/{k}": metrics[k] for k in METRIC_NAMES}, state["step"])
            except Exception as error:  # reported below, after the results are written
                evaluation_error = error
                summary["evaluation_error"] = f"{type(error).__name__}: {error}"
        (export_dir / "README.md").write_text(render_detection_card(args, unwrapped, metrics, summary))
        write_json(output_dir / RESULTS_FILE, {"metrics": metrics, "summary": summary})
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if evaluation_error is not None:
        raise RuntimeError(
            f"the end-of-training evaluation on split {args.eval_split!r} failed ({summary['evaluation_error']}); "
            f"the model was exported to {export_dir} and the last checkpoint is {last_checkpoint}"
        ) from evaluation_error
    return DetectionResult(state["step"], export_dir, metrics, summary)


def load_run_samples(
    args: DetectionArguments, label_names: list[str], world_size: int
) -> tuple[list[DetectionSample], Counter, list[DetectionSample], Counter]:
    """The training and (with `evaluate_at_end`) evaluation images with their skip counts, read before the model is
    built: a split with no usable image, or too few for one global batch, is a `ValueError` naming it."""
    train, skipped = load_detection_samples(args.data_dir, args.train_split, label_names, args.image_kinds)
    require_samples(train, skipped, args.train_split, args.data_dir, "fine-tuning needs boxed images to train on")
    needed = args.per_device_train_batch_size * world_size
    if len(train) < needed:
        raise ValueError(
            f"split {args.train_split!r} of {args.data_dir} has {len(train)} usable boxed images (skipped: "
            f"{describe_skips(skipped) or 'none'}); one global batch needs {needed} "
            f"({args.per_device_train_batch_size} per process x {world_size} process(es)): lower "
            "per_device_train_batch_size or add images"
        )
    evaluation: list[DetectionSample] = []
    eval_skipped: Counter = Counter()
    if args.evaluate_at_end:
        evaluation, eval_skipped = load_detection_samples(args.data_dir, args.eval_split, label_names, args.image_kinds)
        remedy = "name another split with --eval_split, or pass --evaluate_at_end false"
        require_samples(evaluation, eval_skipped, args.eval_split, args.data_dir, remedy)
    return train, skipped, evaluation, eval_skipped


def export_detection(
    model: EclipForObjectDetection,
    image_processor: EclipImageProcessor,
    save_directory: Path,
    args: DetectionArguments,
    metrics: dict[str, float],
    summary: dict[str, Any],
) -> Path:
    """The model (with its code, for `trust_remote_code=True`), the image processor and the model card. No tokenizer:
    with one in the folder, transformers' object-detection pipeline would treat the model as a LayoutLM-style token
    classifier."""
    save_directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(save_directory)
    image_processor.save_pretrained(save_directory)
    (save_directory / "README.md").write_text(render_detection_card(args, model, metrics, summary))
    return save_directory


def render_detection_card(
    args: DetectionArguments, model: EclipForObjectDetection, metrics: dict[str, float], summary: dict[str, Any]
) -> str:
    """The export's README.md: Hub metadata (`pipeline_tag: object-detection`, the mAP as model-index), the model, the
    data and its licence, the recipe, the evaluation, intended use and limitations."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    data = describe_dataset(args.data_dir)
    dataset, licence = data["name"], data["licence"]
    eval_results = [
        EvalResult(
            task_type="object-detection",
            task_name="Object detection",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=args.eval_split,
            metric_type="map",
            metric_name=name.replace("map", "mAP"),
            metric_value=float(metrics[name]),
        )
        for name in METRIC_NAMES
        if name in metrics
    ]
    metadata = ModelCardData(
        model_name=Path(args.output_dir).name,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="object-detection",
        tags=["eclip", "e-commerce", "object-detection", "custom_code"],
        eval_results=eval_results or None,
    )
    config = model.config
    if metrics:
        rows = "\n".join(f"| {name.replace('map', 'mAP')} | {100 * metrics[name]:.1f} |" for name in METRIC_NAMES)
        evaluation = (
            f"Boxed images of the held-out products (`{args.eval_split}` split, {metrics['num_images']} images, "
            f"{metrics['num_objects']} objects), pycocotools' COCOeval, all sizes, 100 detections per image:\n\n"
            f"| metric | % |\n|---|---:|\n{rows}"
        )
        if summary.get("skipped_eval_images"):
            evaluation += f"\n\nSkipped images (by reason): {summary['skipped_eval_images']}."
    elif summary.get("evaluation_error"):
        evaluation = (
            f"The evaluation failed ({summary['evaluation_error']}); evaluate this export with `python -m "
            f"modeling_eclip.detection --model <this folder> --data {args.data_dir} --split {args.eval_split}`."
        )
    elif args.evaluate_at_end:
        evaluation = "Not evaluated yet: the run evaluates after writing the export."
    else:
        evaluation = "Not evaluated in this run (`evaluate_at_end` was off)."
    recipe = yaml.safe_dump(dataclasses.asdict(args), sort_keys=True).strip()
    body = f"""# {Path(args.output_dir).name}

ECLIP transferred to object detection (Sec. 4.2.5 of *Learning Instance-Level Representation for Large-Scale
Multi-Modal Pretraining in E-commerce*, CVPR 2023), following DETR: the image tower embeds the image, the instance
decoder's {config.decoder_config.num_queries} slots are decoded by new class and box heads. Fine-tuned from
`{args.model_name_or_path}` with ECLIP for transformers (`examples/finetune_detection.py`).

```python
from transformers import pipeline

detector = pipeline("object-detection", model="{EXPORT_DIR}", trust_remote_code=True)
detector("photo.png", threshold=0.5)  # [{{"score", "label", "box": {{"xmin", "ymin", "xmax", "ymax"}}}}, ...]
```

## Labels

{config.num_labels} product categories: {", ".join(config.id2label[i] for i in range(config.num_labels))}.

## Training data

`{dataset}`: {data["description"]} The boxes of every object in the customer and ad photos of the
`{args.train_split}` products ({summary["train_images"]} images; skipped: {summary["skipped_train_images"] or "none"}),
each labelled with its product's category.

### Data licences

{licence}

## Training recipe

{summary["step"]} steps of {summary["global_batch_size"]} images on {summary["world_size"]} process(es)
({summary["device"]}), {summary["train_seconds"]:.0f} s; {summary["skipped_nonfinite"]} steps skipped for non-finite
losses. AdamW, the image tower at `backbone_learning_rate`, the text tower frozen; the DETR loss (Hungarian matching,
CE + L1 + GIoU){" with auxiliary losses per decoder block" if config.auxiliary_loss else ""}.

```yaml
{recipe}
```

## Evaluation

{evaluation}

## Intended use and limitations

Research on transferring instance-level product representations to detection, on data like the training data. Trained
on a small synthetic catalogue: expect far lower accuracy on real photographs or other categories. At most
{config.decoder_config.num_queries} objects per image. Not for decisions about people.
"""
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}"))


def main(argv: list[str] | None = None) -> DetectionResult:
    result = finetune(parse_detection_arguments(argv))
    if result.metrics:
        print(json.dumps({k: v for k, v in result.metrics.items()}, indent=2))
    return result
