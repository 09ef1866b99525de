# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Image-tower pretraining: a preset's ViT trained as `ViTForImageClassification` with transformers' `Trainer`.

The paper starts ECLIP's image tower from ImageNet weights (Sec. 4.1). Offline, `modeling_eclip.data.
image_pretraining_set` builds the analogue (non-product emoji in product-photo-like scenes); this trains the preset's
ViT on it and saves a standard ViT checkpoint (config + safetensors + image processor) that
`EclipModel.from_vision_text_pretrained` and the pretraining recipes' `vision_model_name_or_path` load (the classifier
head is left behind when loaded as the tower). `examples/pretrain_image_tower.py` is its command line.

The dataset is checked whole before training (`image_tower_data.load_tower_data`): validation labels are scored by
class name, examples without a label (-1) or with an image that does not decode are skipped and counted (kept in
`tower_info.json`), and a split left empty, an unknown validation class or a label outside its classes is refused,
named. The output folder is replaced whole once the tower is saved (`data.output_folder`).

`make demo` trains it once and keeps it under `outputs/` until one of its inputs changes (Makefile dependencies).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from ..data.output_folder import replacing_output_folder
from ..data.stream import augment_image
from ..processing_eclip import to_rgb_image
from .arguments import read_model_config, resolve_pretrained_path
from .fields import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, check_ranges, clear_none_strings
from .image_tower_data import TowerData, image_source, load_tower_data

logger = logging.getLogger(__name__)

TOWER_INFO = "tower_info.json"


@dataclass
class ImageTowerArguments:
    """Every field is a `--flag` of `examples/pretrain_image_tower.py`."""

    dataset: str = field(
        metadata={
            "help": "Image-classification dataset: a local folder or Hub id with an `image` Image and a `label` "
            "ClassLabel column, splits train and validation (labels matched by class name; -1: no label, skipped)."
        }
    )
    output_dir: str = field(metadata={"help": "Where the ViT checkpoint is written."})
    model_config: str = field(
        default="eclip-tiny", metadata={"help": "ECLIP preset (or config JSON) whose vision_config is trained."}
    )
    num_train_epochs: Annotated[float, POSITIVE] = 6.0
    per_device_train_batch_size: Annotated[int, AT_LEAST_ONE] = 64
    learning_rate: Annotated[float, POSITIVE] = 1e-3
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.05
    warmup_ratio: Annotated[float, FRACTION] = field(
        default=0.05, metadata={"help": "Share of the steps spent warming up."}
    )
    label_smoothing: Annotated[float, FRACTION] = 0.0
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast (CPU too)."})
    augment: bool = field(default=True, metadata={"help": "The pretraining stream's crop / flip / colour jitter."})
    max_train_minutes: Annotated[float | None, POSITIVE] = field(
        default=None, metadata={"help": "Stop (and save) when this wall-clock budget is used up."}
    )
    classifier_init_text_model: str | None = field(
        default=None,
        metadata={
            "help": "A text encoder (e.g. all-MiniLM-L6-v2) whose [CLS] embeddings of the class names, randomly "
            "projected to the tower width, initialise the classifier rows: similar names start with similar rows."
        },
    )
    seed: Annotated[int, NON_NEGATIVE] = 0
    dataloader_num_workers: Annotated[int, NON_NEGATIVE] = 1
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a non-empty output_dir that holds no image tower."}
    )

    def __post_init__(self) -> None:
        clear_none_strings(self)
        check_ranges(self)


def _text_initialised_classifier(text_model: str, names: list[str], width: int, seed: int) -> torch.Tensor:
    """Classifier rows `(classes, width)`: centred, normalised [CLS] embeddings of "a <name>" through a fixed random
    projection (which keeps their inner products), scaled to the usual 0.02 standard deviation."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_pretrained_path(text_model)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        embeds = torch.cat(
            [
                model(
                    **tokenizer([f"a {n}" for n in names[i : i + 256]], padding=True, return_tensors="pt")
                ).last_hidden_state[:, 0]
                for i in range(0, len(names), 256)
            ]
        )
    embeds = torch.nn.functional.normalize(embeds - embeds.mean(0), dim=-1)
    projection = torch.randn(embeds.shape[1], width, generator=torch.Generator().manual_seed(seed))
    rows = embeds @ projection
    return rows * (0.02 / rows.std())


def pretrain_image_tower(args: ImageTowerArguments) -> dict[str, Any]:
    """Trains the tower and returns its info (validation accuracy, training time and throughput). Refuses a non-empty
    `output_dir` that holds no image tower (a `tower_info.json`), unless `overwrite_output_dir`; the dataset is
    checked whole before training (`load_tower_data`), and the folder is replaced only once the tower is saved."""
    output = Path(args.output_dir)
    if output.exists() and any(output.iterdir()) and not (args.overwrite_output_dir or (output / TOWER_INFO).is_file()):
        raise FileExistsError(f"{output} is not empty and holds no image tower; pass --overwrite_output_dir")
    with replacing_output_folder(output, overwrite=True) as staging:
        return _train_tower(args, load_tower_data(args.dataset), staging)


def _train_tower(args: ImageTowerArguments, tower_data: TowerData, staging: Path) -> dict[str, Any]:
    """Trains the tower on checked data, scores it on the validation split and saves it with its info into
    `staging`; returns the info."""
    from accelerate.state import AcceleratorState
    from transformers import (
        Trainer,
        TrainerCallback,
        TrainingArguments,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessorPil,
    )

    from ..evaluation.metrics import ClassificationAccuracy, rank_by_score

    data, names = tower_data.data, tower_data.names

    vision = read_model_config(args.model_config)["vision_config"]
    config = ViTConfig(
        **{k: v for k, v in vision.items() if k != "model_type"},
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    torch.manual_seed(args.seed)
    model = ViTForImageClassification(config)
    if args.classifier_init_text_model:
        with torch.no_grad():
            rows = _text_initialised_classifier(args.classifier_init_text_model, names, config.hidden_size, args.seed)
            model.classifier.weight.copy_(rows)
            model.classifier.bias.zero_()
    processor = ViTImageProcessorPil(size={"height": config.image_size, "width": config.image_size})

    def transform(batch: dict[str, list], split: str) -> dict[str, Any]:
        rng = np.random.default_rng()
        images = [to_rgb_image(image_source(image, tower_data.image_folders[split])) for image in batch["image"]]
        if split == "train" and args.augment:
            images = [augment_image(image, rng) for image in images]
        labels = [tower_data.label_maps[split][label] for label in batch["label"]]  # the train split's class ids
        return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"], "labels": labels}

    def compute_metrics(prediction: Any) -> dict[str, float]:
        rankings = rank_by_score(torch.as_tensor(prediction.predictions), 5).tolist()
        scores = ClassificationAccuracy(keep_in_memory=True).compute(
            predictions=rankings, references=prediction.label_ids.tolist(), top_k=[1, 5]
        )
        return {"acc@1": scores["acc@1"], "acc@5": scores["acc@5"]}

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, _: Any, state: Any, control: Any, **__: Any) -> None:
            if args.max_train_minutes and time.perf_counter() - self.start > 60 * args.max_train_minutes:
                logger.warning("image tower: time budget used up at step %d of %d", state.global_step, state.max_steps)
                control.should_training_stop = True

    training_args = TrainingArguments(
        output_dir=str(staging / "trainer"),
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=128,
        num_train_epochs=args.num_train_epochs,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type="cosine",
        label_smoothing_factor=args.label_smoothing,
        bf16=args.bf16,
        use_cpu=not torch.accelerator.is_available(),
        dataloader_num_workers=args.dataloader_num_workers,
        remove_unused_columns=False,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data["train"].with_transform(lambda batch: transform(batch, "train")),
        eval_dataset=data["validation"].with_transform(lambda batch: transform(batch, "validation")),
        compute_metrics=compute_metrics,
        callbacks=[TimeBudget()],
    )
    start = time.perf_counter()
    try:
        result = trainer.train()
        train_seconds = time.perf_counter() - start
        metrics = trainer.evaluate()
    finally:
        # Trainer sets up accelerate's process-wide state (bf16 here); a pretraining run later in the same process
        # must be free to choose its own.
        AcceleratorState._reset_state(reset_partial_state=True)
    shutil.rmtree(staging / "trainer", ignore_errors=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    info = {
        "arguments": asdict(args),
        "num_classes": len(names),
        "steps": result.global_step,
        "epochs": round(result.global_step * args.per_device_train_batch_size / len(data["train"]), 2),
        "train_seconds": round(train_seconds, 1),
        "samples_per_second": round(result.global_step * args.per_device_train_batch_size / train_seconds, 1),
        "skipped_unreadable_images": tower_data.unreadable,
        "skipped_unlabelled_examples": tower_data.unlabelled,
        "validation_acc@1": metrics["eval_acc@1"],
        "validation_acc@5": metrics["eval_acc@5"],
        "chance_acc@1": 1 / len(names),
    }
    (staging / TOWER_INFO).write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(ImageTowerArguments, description="Pretrain ECLIP's image tower as an image classifier.")
    (args,) = parser.parse_args_into_dataclasses(argv)
    info = pretrain_image_tower(args)
    print(
        f"image tower trained for {info['steps']} steps ({info['epochs']} epochs) in {info['train_seconds']:.0f} s "
        f"({info['samples_per_second']:.0f} images/s); held-out acc@1 {100 * info['validation_acc@1']:.1f}% "
        f"(acc@5 {100 * info['validation_acc@5']:.1f}%, chance {100 * info['chance_acc@1']:.2f}%) -> {args.output_dir}"
    )
    return info


if __name__ == "__main__":
    main()
