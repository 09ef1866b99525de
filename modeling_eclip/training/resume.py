# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Resuming a pretraining run: the loop's counters a checkpoint holds (`TrainerState`), what a resume compares with
the checkpoint (`make_run_config`: the recipe, the model config, and fingerprints of the data and the tokenizer) and
which changed settings it refuses or applies, and `resume`, which finds the checkpoint `--resume` names (in
output_dir or on the Hub) and restores it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from ..configuration_eclip import EclipConfig
from ..data.arguments import DATASET_ARGUMENT_NAMES
from ..data.stream import ProductPairStream
from ..processing_eclip import EclipProcessor
from .arguments import HUB_CHECKPOINT_DIR, RESUME_FROM_HUB, PretrainingArguments
from .checkpoints import (
    CHECKPOINT_MANIFEST,
    CHECKPOINT_PREFIX,
    RUN_CONFIG,
    TRAINER_STATE,
    CheckpointError,
    CheckpointManager,
    read_json,
    remove_path,
)


@dataclass
class TrainerState:
    """The counters a checkpoint's `trainer_state.json` holds (the rest of a resume is Accelerate's state and the
    stream positions)."""

    step: int = 0
    skipped_nonfinite: int = 0
    train_seconds: float = 0.0
    samples: int = 0
    last_good_checkpoint: str | None = None


def trainer_state_from(saved: dict[str, Any], path: Path) -> TrainerState:
    """The `TrainerState` a checkpoint's `trainer_state.json` (at `path`) holds; `CheckpointError` naming the key for an
    unknown key or a value of another kind (the counters are integers >= 0, the time a finite number >= 0)."""
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(TrainerState)})
    if unknown:
        raise CheckpointError(f"{path} has unknown keys {unknown}")
    for name, value in saved.items():
        if name == "last_good_checkpoint":
            fits = value is None or isinstance(value, str)
        elif name == "train_seconds":
            fits = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")
        else:
            fits = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if not fits:
            raise CheckpointError(f"{path}: {name} is {value!r}, which no run saves")
    if "step" not in saved:
        raise CheckpointError(f"{path} has no step")
    return TrainerState(**saved)


# On resume, a value that differs from the checkpoint's is refused for these: the checkpoint's optimiser and schedule
# would keep the old value silently (learning rates, AdamW, the schedule's kind), or the data stream and objectives
# would no longer continue the run (batch, seed, shuffling, augmentation, anchors, the ITC-only phase). The model
# config, catalogue and tokenizer are compared by content (`make_run_config`), so moved files are fine.
RESUME_REFUSED = (
    "learning_rate",
    "vision_learning_rate",
    "new_parameters_learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "lr_scheduler_type",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
    "shuffle_buffer",
    "augment",
    "anchor_kind",
    "anchor_kind_probability",
    "instance_objectives_start_step",
    "train_split",
    *(name for name in DATASET_ARGUMENT_NAMES if name.endswith("_column")),
)
# Not compared: paths (compared by content instead) and how this start resumes.
RESUME_NOT_COMPARED = (
    "model_config",
    "config_overrides",
    "text_model_name_or_path",
    "vision_model_name_or_path",
    "tokenizer_name_or_path",
    "dataset_name",
    "build_demo_catalogue",
    "output_dir",
    "overwrite_output_dir",
    "resume",
)


def resume_changes(saved: Mapping[str, Any], args: PretrainingArguments) -> tuple[list[str], list[str]]:
    """(refused, applied): "name: saved -> now" for each field that differs from the checkpoint's recipe. Every
    field outside `RESUME_REFUSED` and `RESUME_NOT_COMPARED` (max_steps, the schedule's warm-up and arguments, logging,
    saving, evaluation, trackers, Hub, time budget, clipping, decode processes, mixed precision) applies from the
    resumed step on."""
    refused, applied = [], []
    current = json.loads(json.dumps(dataclasses.asdict(args)))  # as saved: JSON types
    for name, value in current.items():
        if name in RESUME_NOT_COMPARED or name not in saved or saved[name] == value:
            continue
        (refused if name in RESUME_REFUSED else applied).append(f"{name}: {saved[name]!r} -> {value!r}")
    return refused, applied


def make_run_config(args: PretrainingArguments, config: EclipConfig, processor: EclipProcessor) -> dict[str, Any]:
    """What a resume compares with the checkpoint (`resume`): the recipe, the model config, and fingerprints of the
    train split (shard names and sizes) and of the tokenizer's vocabulary: contents, not paths, so a run moved to
    another machine resumes."""

    def without_paths(values: Any) -> Any:  # where the towers were loaded from is not part of the model
        if not isinstance(values, dict):
            return values
        return {k: without_paths(v) for k, v in values.items() if k not in ("transformers_version", "_name_or_path")}

    model_config = without_paths(config.to_dict())
    vocabulary = json.dumps(sorted(processor.tokenizer.get_vocab().items()))
    return {
        "arguments": json.loads(json.dumps(dataclasses.asdict(args))),
        "model_config": json.loads(json.dumps(model_config, sort_keys=True)),
        "catalogue": args.catalogue_source().fingerprint(args.train_split),
        "tokenizer": f"{type(processor.tokenizer).__name__} {hashlib.sha256(vocabulary.encode()).hexdigest()}",
    }


def check_resume_config(
    path: Path, run_config: Mapping[str, Any], args: PretrainingArguments, accelerator: Accelerator
) -> None:
    """Refuses a resume whose settings the checkpoint's state would silently override or that would no longer continue
    the run (`RESUME_REFUSED`, another model config, train split or tokenizer); prints the changed settings
    that apply from the resumed step on."""
    saved = read_json(path / RUN_CONFIG)
    refused, applied = resume_changes(saved.get("arguments", {}), args)
    if saved.get("model_config") != run_config["model_config"]:
        old, new = saved.get("model_config") or {}, run_config["model_config"]
        fields = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        refused.append(f"the model config (fields {fields})")
    for key, what in (("catalogue", "the train split's shards"), ("tokenizer", "the tokenizer's vocabulary")):
        if saved.get(key) != run_config[key]:
            refused.append(what)
    if refused:
        raise CheckpointError(
            f"cannot resume {path}: these settings differ from the checkpoint's and cannot apply to a resumed run "
            f"(its optimiser, schedule or data position would keep the old ones): {'; '.join(refused)}. Restore them, "
            "or start a new run into another output_dir"
        )
    if applied:
        accelerator.print(
            f"resuming {path} with changed settings, applied from the resumed step on: {'; '.join(applied)}"
        )


def resume(
    args: PretrainingArguments,
    checkpoints: CheckpointManager,
    stream: ProductPairStream,
    scheduler: Any,
    accelerator: Accelerator,
    hub_api: Any = None,
) -> TrainerState:
    """The state of the checkpoint `--resume` names (model, optimiser, schedule, RNG states and stream position
    restored), or a fresh one. Settings are compared with the checkpoint's (`check_resume_config`)."""
    path = checkpoint_to_resume(args, checkpoints, accelerator, hub_api)
    if path is None:
        return TrainerState()
    state = trainer_state_from(checkpoints.load(path, stream, scheduler), path / TRAINER_STATE)
    check_resume_config(path, checkpoints.run_config, args, accelerator)
    if args.resume not in ("latest", RESUME_FROM_HUB):
        remove_later_checkpoints(path, state.step, checkpoints, args, accelerator)
    state.last_good_checkpoint = str(path)
    accelerator.print(f"resumed from {path} at step {state.step}")
    return state


def checkpoint_to_resume(
    args: PretrainingArguments, checkpoints: CheckpointManager, accelerator: Accelerator, hub_api: Any = None
) -> Path | None:
    """The checkpoint `--resume` names, None for a fresh start: `latest` is the newest intact checkpoint (a damaged
    newer one is named and skipped), `hub` the one `hub_strategy=checkpoint` pushed, downloaded first."""
    if args.resume == RESUME_FROM_HUB:
        return download_hub_checkpoint(args, accelerator, hub_api)
    if args.resume == "latest":
        path = checkpoints.latest_intact()
        if path is None:
            accelerator.print(f"--resume latest: no checkpoint in {args.output_dir} yet, starting from scratch")
        return path
    return Path(args.resume) if args.resume else None


def remove_later_checkpoints(
    path: Path, step: int, checkpoints: CheckpointManager, args: PretrainingArguments, accelerator: Accelerator
) -> None:
    """Resuming an older checkpoint by its path: the checkpoints of later steps belong to the run this one branches
    off. They are kept unless `--overwrite_output_dir` (a later `--resume latest` would continue that run, and a save
    of the same step would mix the two), so without it the resume is refused."""
    newer = [
        p
        for p in checkpoints.directories()
        if int(p.name.removeprefix(CHECKPOINT_PREFIX)) > step and p.resolve() != path.resolve()
    ]
    if newer and not args.overwrite_output_dir:
        raise CheckpointError(
            f"resuming step {step} from {path}, but {args.output_dir} holds later checkpoints "
            f"({', '.join(p.name for p in newer)}) of the run this one would replace; pass --overwrite_output_dir "
            "to delete them, or resume into another output_dir"
        )
    if newer and accelerator.is_main_process:
        for later in newer:
            remove_path(later)
        accelerator.print(f"--overwrite_output_dir: deleted {', '.join(p.name for p in newer)}")
    accelerator.wait_for_everyone()


def download_hub_checkpoint(args: PretrainingArguments, accelerator: Accelerator, hub_api: Any = None) -> Path:
    """`<output_dir>/last-checkpoint`, downloaded from `hub_model_id` by the main process (`huggingface_hub`)."""
    if accelerator.is_main_process:
        if hub_api is None:
            from huggingface_hub import HfApi

            hub_api = HfApi()
        hub_api.snapshot_download(
            repo_id=args.hub_model_id, allow_patterns=[f"{HUB_CHECKPOINT_DIR}/*"], local_dir=args.output_dir
        )
    accelerator.wait_for_everyone()
    path = Path(args.output_dir) / HUB_CHECKPOINT_DIR
    if not (path / CHECKPOINT_MANIFEST).is_file():
        raise FileNotFoundError(
            f"resume=hub: {args.hub_model_id} has no complete {HUB_CHECKPOINT_DIR}/ (push one with "
            "--hub_strategy checkpoint)"
        )
    return path
