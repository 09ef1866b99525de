# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""What a pretraining run works with (`Run`, its model and optimiser in a `Learner`) and how it starts (`start_run`):
the recipe checked, Accelerate, the data, the model, AdamW and the schedule, the stream, the checkpoints and the state
of a resumed run, and the trackers."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets.config
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm

from ..configuration_eclip import EclipConfig
from ..data.stream import ProductPairStream
from ..modeling_eclip import EclipForPreTraining
from ..processing_eclip import EclipProcessor
from .arguments import HUB_CHECKPOINT_DIR, PretrainingArguments, check_arguments, check_global_batch
from .builders import (
    build_model_and_processor,
    check_catalogue,
    ensure_demo_catalogue,
    make_optimizer,
    make_stream,
    parameter_groups,
)
from .checkpoints import METRICS_FILE, CheckpointManager, remove_run_files, truncate_metrics
from .export import EXPORT_DIR, HubPusher
from .resume import TrainerState, make_run_config, resume
from .schedule import make_lr_scheduler
from .tracking import tracker_init_kwargs

# What a run writes into output_dir besides its checkpoints; --overwrite_output_dir deletes them before starting over.
SUMMARY_FILE = "train_summary.json"


@dataclass
class Learner:
    """The model being trained and what optimises it."""

    model: torch.nn.Module  # as prepared by Accelerate (DDP-wrapped with several processes)
    pretrainer: EclipForPreTraining  # the same model, unwrapped
    processor: EclipProcessor
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler  # stepped by the loop once per optimiser step

    @property
    def config(self) -> EclipConfig:
        return self.pretrainer.config


@dataclass
class Run:
    """Everything the loop works with, built once by `start_run`."""

    args: PretrainingArguments
    accelerator: Accelerator
    learner: Learner
    stream: ProductPairStream
    checkpoints: CheckpointManager
    pusher: HubPusher | None  # main process with push_to_hub only
    state: TrainerState
    progress: tqdm
    started: float  # perf_counter of the start, minus the training time of the run this one resumes
    train_products: int | None  # products of the train split (`check_catalogue`; None: not known up front)
    metrics: dict[str, float] = field(default_factory=dict)  # the latest evaluation

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def global_batch(self) -> int:
        """Products per optimiser step, over every process and micro-batch."""
        return (
            self.args.per_device_train_batch_size
            * self.accelerator.num_processes
            * self.args.gradient_accumulation_steps
        )


def start_run(args: PretrainingArguments, hub_api: Any = None) -> Run:
    """Checks the recipe, then builds everything the loop needs: Accelerate, the data, the model, AdamW and the
    schedule, the stream, and the state of a resumed run."""
    # Everything that can be wrong with the recipe fails here, before any model, data or process group work.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    config = check_arguments(args, world_size)
    accelerator = make_accelerator(args, config)
    if accelerator.num_processes != world_size:  # a launcher that does not set WORLD_SIZE (e.g. MPI)
        check_global_batch(args, config, accelerator.num_processes)
    if accelerator.is_main_process:
        if args.overwrite_output_dir and args.resume is None:
            clear_previous_run(args, accelerator)
        ensure_demo_catalogue(args)
    accelerator.wait_for_everyone()
    catalogue_products = check_catalogue(args, accelerator.num_processes)
    if accelerator.is_main_process:  # only for a dataset that can be read
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    # datasets sleeps 5 s whenever a parquet stream ends (a workaround for an arrow crash at interpreter shutdown);
    # training re-reads its shards every epoch in a long-lived process, where that sleep only stalls the loop.
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0

    learner = make_learner(args, config, accelerator)
    stream = make_stream(args, learner.processor, accelerator)
    run_config = make_run_config(args, learner.config, learner.processor)
    checkpoints = CheckpointManager(accelerator, args.output_dir, args.save_total_limit, run_config)
    checkpoints.remove_incomplete()
    pusher = None
    if args.push_to_hub and accelerator.is_main_process:
        pusher = HubPusher(args.hub_model_id, args.hub_private_repo, hub_api)
    state = resume(args, checkpoints, stream, learner.scheduler, accelerator, hub_api)
    if accelerator.is_main_process:  # the steps after the resumed one are logged again
        truncate_metrics(Path(args.output_dir) / METRICS_FILE, state.step)
    accelerator.wait_for_everyone()

    if args.report_to:
        accelerator.init_trackers(
            args.project_name,
            config=tracker_config(args),
            init_kwargs=tracker_init_kwargs(args.report_to, args.run_name),
        )
    progress = tqdm(
        total=args.max_steps,
        initial=state.step,
        disable=not accelerator.is_local_main_process,
        desc="pretraining",
        dynamic_ncols=True,
    )
    return Run(
        args=args,
        accelerator=accelerator,
        learner=learner,
        stream=stream,
        checkpoints=checkpoints,
        pusher=pusher,
        state=state,
        progress=progress,
        started=time.perf_counter() - state.train_seconds,
        train_products=catalogue_products.get(args.train_split),
    )


def make_learner(args: PretrainingArguments, config: EclipConfig, accelerator: Accelerator) -> Learner:
    """The pretraining model with its pretrained towers and processor, AdamW and the schedule, prepared by
    Accelerate."""
    model, processor, pretrained_prefixes = build_model_and_processor(args, config)
    optimizer = make_optimizer(parameter_groups(model, args, pretrained_prefixes), args)
    # Not prepared: Accelerate would step it once per process. Checkpoints save it as JSON (Accelerate pickles it).
    scheduler = make_lr_scheduler(
        optimizer, args.lr_scheduler_type, args.num_warmup_steps, args.max_steps, args.lr_scheduler_kwargs
    )
    prepared, optimizer = accelerator.prepare(model, optimizer)
    pretrainer: EclipForPreTraining = accelerator.unwrap_model(prepared)
    pretrainer.train()
    return Learner(prepared, pretrainer, processor, optimizer, scheduler)


def make_accelerator(args: PretrainingArguments, config: EclipConfig) -> Accelerator:
    unused_parameters = args.instance_objectives_start_step > 0 or any(
        getattr(config, name) == 0 for name in config.loss_weight_names
    )
    accelerator = Accelerator(
        # Without cpu=True, Accelerate treats torchrun's processes on a machine without an accelerator as unrelated
        # single processes (DistributedType.NO) instead of one gloo group (MULTI_CPU).
        cpu=not torch.accelerator.is_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to or None,
        project_dir=args.output_dir,
        # A switched-off objective leaves its parameters (e.g. the decoder in the ITC-only baseline) without gradients.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused_parameters)],
    )
    fsdp_requested = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if fsdp_requested and accelerator.distributed_type != DistributedType.FSDP:
        # Accelerate turns FSDP on only over GPU-type devices; elsewhere it would train unsharded without a word.
        raise RuntimeError(
            f"The launch config asks for FSDP, but Accelerate set up {accelerator.distributed_type.value} on "
            f"{accelerator.device}: it runs FSDP only on GPU-type accelerators, so this run would not be sharded. "
            "On CPU, launch with configuration/accelerate-cpu.yaml or torchrun (DDP)."
        )
    return accelerator


def clear_previous_run(args: PretrainingArguments, accelerator: Accelerator) -> None:
    """`--overwrite_output_dir` without `--resume`: deletes what an earlier run wrote into output_dir (checkpoints,
    metrics, summary, export, Hub staging, TensorBoard logs); other files are left alone."""
    names = (METRICS_FILE, SUMMARY_FILE, EXPORT_DIR, HUB_CHECKPOINT_DIR, args.project_name)
    doomed = remove_run_files(args.output_dir, names, patterns=(".hub-push-*",))
    if doomed:
        accelerator.print(f"--overwrite_output_dir: deleted {', '.join(doomed)} from {args.output_dir}")


def tracker_config(args: PretrainingArguments) -> dict[str, Any]:
    """The recipe as tracker hyper-parameters (scalars as they are, anything else as JSON)."""
    return {
        k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in dataclasses.asdict(args).items()
    }
