# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The pretraining loop, `pretrain`: build the run, loop, log, checkpoint, export (like open_clip's `train_one_epoch`).

One optimiser step is `gradient_accumulation_steps` micro-batches through Accelerate: forward (L_itc alone before
`instance_objectives_start_step`), backward, and at the last micro-batch gradient clipping and the AdamW step. A step
whose loss or gradient is not finite on some rank is skipped whole and counted. After a good step: the learning-rate
schedule (`transformers.get_scheduler`; by default warm-up, then linear decay, Sec. 4.1), the temperature clamp, the
EMA update of the momentum model (Eq. 8) and the enqueue of the step's micro-batches, in order. Then logging
(Accelerate's trackers and `metrics.jsonl`; images at evaluations), periodic evaluation and checkpoints, and a
wall-clock budget. At the end: a last checkpoint, the evaluation for the
model card, the export and the Hub upload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets.config
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm

from ..configuration_eclip import EclipConfig
from ..data.stream import COUNTER_NAMES, REJECTION_COUNTERS, ProductPairStream
from ..modeling_eclip import LOSS_NAMES, EclipForPreTraining, EclipForPreTrainingOutput
from ..processing_eclip import EclipProcessor
from .arguments import (
    HUB_CHECKPOINT_DIR,
    RESUME_FROM_HUB,
    PretrainingArguments,
    check_arguments,
    check_global_batch,
    parse_arguments,
    resume_changes,
)
from .builders import (
    build_model_and_processor,
    check_catalogue,
    ensure_demo_catalogue,
    make_optimizer,
    make_stream,
    parameter_groups,
)
from .checkpoints import (
    CHECKPOINT_PREFIX,
    METRICS_FILE,
    RUN_CONFIG,
    TRAINER_STATE,
    CheckpointError,
    CheckpointManager,
    append_metrics,
    read_json,
    remove_run_files,
    truncate_metrics,
    write_json,
)
from .export import EXPORT_DIR, HubPusher, export_pretrained, render_model_card, stage_for_hub
from .results import NonFiniteLossError, PretrainingResult
from .schedule import make_lr_scheduler
from .tracking import log_images, log_scalars, tracker_init_kwargs


class EmptyEpochError(RuntimeError):
    """Raised when a whole epoch of the train split gives no full batch: the loop would otherwise never take a step."""


# What a run writes into output_dir besides its checkpoints; --overwrite_output_dir deletes them before starting over.
SUMMARY_FILE = "train_summary.json"


@dataclass
class TrainerState:
    """The counters a checkpoint's `trainer_state.json` holds (the rest of a resume is Accelerate's state and the
    stream positions)."""

    step: int = 0
    skipped_nonfinite: int = 0
    train_seconds: float = 0.0
    samples: int = 0
    last_good_checkpoint: str | None = None


@dataclass
class Run:
    """Everything the loop works with, built once by `start_run`."""

    args: PretrainingArguments
    config: EclipConfig
    accelerator: Accelerator
    model: torch.nn.Module  # as prepared by Accelerate (DDP-wrapped with several processes)
    pretrainer: EclipForPreTraining  # the same model, unwrapped
    processor: EclipProcessor
    pretrained_prefixes: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stream: ProductPairStream
    checkpoints: CheckpointManager
    pusher: HubPusher | None
    state: TrainerState
    progress: tqdm
    started: float  # perf_counter of the start, minus the training time of the run this one resumes
    run_config: dict[str, Any]  # what a resume compares (`make_run_config`)
    catalogue_products: dict[str, int | None]  # products per checked split (`check_catalogue`; None: not known)
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


@dataclass
class LogWindow:
    """The finite micro-batches' loss terms and the samples seen since the last log line."""

    sums: dict[str, float] = field(default_factory=dict)
    micro_batches: int = 0
    samples: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, output: EclipForPreTrainingOutput) -> None:
        for name in LOSS_NAMES:
            if getattr(output, name) is not None:
                self.sums[name] = self.sums.get(name, 0.0) + float(getattr(output, name).detach())
        self.micro_batches += 1


def pretrain(
    args: PretrainingArguments,
    hub_api: Any = None,
    step_callback: Callable[[int, dict[str, float]], None] | None = None,
) -> PretrainingResult:
    """Runs pretraining as described in the module docstring; `python -m modeling_eclip.training` is its command line.

    `hub_api` replaces `huggingface_hub.HfApi()` (tests); `step_callback(step, logs)` is called on the main process
    after every logged step.
    """
    run = start_run(args, hub_api)
    stop_reason = train(run, step_callback)
    return finish_run(run, stop_reason)


def train(run: Run, step_callback: Callable[[int, dict[str, float]], None] | None) -> str:
    """Micro-batches until `max_steps` optimiser steps are done or the time budget is used up; returns which."""
    args, accelerator, state = run.args, run.accelerator, run.state
    window = LogWindow()
    step_outputs: list[EclipForPreTrainingOutput] = []  # the finite micro-batches of this optimiser step
    step_is_bad = False  # some micro-batch of this optimiser step had a non-finite loss or gradient
    consecutive_bad = 0
    while state.step < args.max_steps:
        for batch in run.stream:  # one epoch; the stream then moves on to the next
            batch = {name: value.to(accelerator.device) for name, value in batch.items()}
            if state.step == args.instance_objectives_start_step > 0:
                # The momentum targets start from the image features the ITC phase learned (idempotent per step).
                run.pretrainer.copy_online_to_momentum()
            with accelerator.accumulate(run.model):
                output = run.model(**batch, itc_only=state.step < args.instance_objectives_start_step)
                finite = backward(run, output.loss)
                step_is_bad |= not finite
                if accelerator.sync_gradients:
                    if not step_is_bad:
                        run.optimizer.step()
                    run.optimizer.zero_grad(set_to_none=True)
            if finite:
                step_outputs.append(output)
                window.add(output)
            window.samples += batch["pixel_values"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue  # the next micro-batch of this optimiser step

            good_outputs, step_outputs = step_outputs, []
            if step_is_bad:
                step_is_bad, consecutive_bad = False, consecutive_bad + 1
                skip_step(run, consecutive_bad)
                continue
            consecutive_bad = 0
            finish_step(run, good_outputs)

            step = state.step
            if step % args.logging_steps == 0 or step == args.max_steps:
                log_step(run, window, good_outputs[-1], step_callback)
                window = LogWindow()
            if args.eval_steps and step % args.eval_steps == 0 and step < args.max_steps:
                evaluate_during_training(run)
            if args.save_steps and step % args.save_steps == 0 and step < args.max_steps:
                save_checkpoint(run, push=True)
            if step >= args.max_steps:
                break
            if time_is_up(run):
                accelerator.print(f"time budget of {args.max_train_minutes} min used up at step {step}")
                return "max_train_minutes"
        check_epoch_gave_batches(run)
    return "max_steps"


def check_epoch_gave_batches(run: Run) -> None:
    """Raises `EmptyEpochError` with the counts when the epoch just finished started at its beginning and gave no
    batch (too few products with two readable images for one batch of different products)."""
    epoch = run.stream.last_epoch
    if epoch is None or not epoch["from_start"] or epoch["batches"]:
        return
    usable = epoch["products"] - sum(epoch[name] for name in REJECTION_COUNTERS.values())
    raise EmptyEpochError(
        f"epoch {epoch['epoch']} of the train split gave no full batch on process {run.accelerator.process_index}: "
        f"{epoch['products']} products read, {epoch['skipped_single_image_products']} of them skipped with fewer than "
        f"two readable images ({epoch['skipped_corrupt_images']} unreadable images), "
        f"{epoch['skipped_blank_title_products']} with a blank title, {epoch['skipped_no_product_id_products']} "
        f"without a product id, {usable} usable, "
        f"{epoch['deferred_duplicates']} held over as duplicates; a batch needs {run.stream.batch_size} different "
        "products. Lower per_device_train_batch_size, or fix the catalogue's images."
    )


# ----------------------------------------------------------------------------------------------- start and finish


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

    model, processor, pretrained_prefixes = build_model_and_processor(args, config)
    optimizer = make_optimizer(parameter_groups(model, args, pretrained_prefixes), args)
    # Stepped once per optimiser step by the loop (not prepared: Accelerate would step it once per process).
    scheduler = make_lr_scheduler(
        optimizer, args.lr_scheduler_type, args.num_warmup_steps, args.max_steps, args.lr_scheduler_kwargs
    )
    # The schedule is saved as JSON by the checkpoints (not registered with Accelerate, which pickles it).
    prepared, optimizer = accelerator.prepare(model, optimizer)
    pretrainer: EclipForPreTraining = accelerator.unwrap_model(prepared)
    pretrainer.train()
    stream = make_stream(args, processor, accelerator)
    checkpoints = CheckpointManager(accelerator, args.output_dir, args.save_total_limit)
    checkpoints.remove_incomplete()
    pusher = None
    if args.push_to_hub and accelerator.is_main_process:
        pusher = HubPusher(args.hub_model_id, args.hub_private_repo, hub_api)
    run_config = make_run_config(args, pretrainer.config, processor)
    state = resume(args, checkpoints, stream, scheduler, run_config, accelerator, hub_api)
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
        config=pretrainer.config,
        accelerator=accelerator,
        model=prepared,
        pretrainer=pretrainer,
        processor=processor,
        pretrained_prefixes=pretrained_prefixes,
        optimizer=optimizer,
        scheduler=scheduler,
        stream=stream,
        checkpoints=checkpoints,
        pusher=pusher,
        state=state,
        progress=progress,
        started=time.perf_counter() - state.train_seconds,
        run_config=run_config,
        catalogue_products=catalogue_products,
    )


def finish_run(run: Run, stop_reason: str) -> PretrainingResult:
    """A last checkpoint, the export, the evaluation for the model card, the summary and the final Hub upload. The
    export is written before the evaluation, so an evaluation that fails loses no trained model."""
    accelerator, state, args = run.accelerator, run.state, run.args
    run.progress.close()
    save_checkpoint(run, push=False)
    export_dir = None
    if accelerator.is_main_process:
        card = render_model_card(args, run.config, run.metrics, {**run_summary(run), "stop_reason": stop_reason})
        export_dir = export_pretrained(run.pretrainer.eclip, run.processor, run.output_dir / EXPORT_DIR, card)
    evaluation_error = None
    if args.evaluate_at_end and accelerator.is_main_process:
        try:
            run.metrics = quick_evaluation(run)
        except Exception as error:  # reported below, after the summary; the export is already on disk
            evaluation_error = error
    ranks = accelerator.gather(torch.tensor([accelerator.process_index], device=accelerator.device)).tolist()
    summary = {**run_summary(run), "ranks": ranks, "stop_reason": stop_reason, "metrics": run.metrics}
    if evaluation_error is not None:
        summary["evaluation_error"] = f"{type(evaluation_error).__name__}: {evaluation_error}"
    if accelerator.is_main_process:
        (export_dir / "README.md").write_text(render_model_card(args, run.config, run.metrics, summary))
        write_json(run.output_dir / SUMMARY_FILE, summary)
        if run.pusher is not None and evaluation_error is None:
            checkpoint = run.checkpoints.latest() if args.hub_strategy == "checkpoint" else None
            run.pusher.push_final(stage_for_hub(export_dir, run.output_dir / ".hub-push-final", checkpoint))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_initialized():  # leave no gloo group behind (a rank could otherwise hang at exit)
        torch.distributed.destroy_process_group()
    if evaluation_error is not None:
        raise RuntimeError(
            f"the end-of-training evaluation on split {args.eval_split!r} failed ({summary['evaluation_error']}); "
            f"the model was exported to {export_dir} and the last checkpoint is {state.last_good_checkpoint}"
        ) from evaluation_error
    return PretrainingResult(step=state.step, export_dir=export_dir, metrics=run.metrics, summary=summary)


def clear_previous_run(args: PretrainingArguments, accelerator: Accelerator) -> None:
    """`--overwrite_output_dir` without `--resume`: deletes what an earlier run wrote into output_dir (checkpoints,
    metrics, summary, export, Hub staging, TensorBoard logs); other files are left alone."""
    names = (METRICS_FILE, SUMMARY_FILE, EXPORT_DIR, HUB_CHECKPOINT_DIR, args.project_name)
    doomed = remove_run_files(args.output_dir, names, patterns=(".hub-push-*",))
    if doomed:
        accelerator.print(f"--overwrite_output_dir: deleted {', '.join(doomed)} from {args.output_dir}")


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


def check_resume_config(path: Path, run_config: dict[str, Any], args: PretrainingArguments, accelerator: Any) -> None:
    """Refuses a resume whose settings the checkpoint's state would silently override or that would no longer continue
    the run (`arguments.RESUME_REFUSED`, another model config, train split or tokenizer); prints the changed settings
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


def resume(
    args: PretrainingArguments,
    checkpoints: CheckpointManager,
    stream: ProductPairStream,
    scheduler: Any,
    run_config: dict[str, Any],
    accelerator: Accelerator,
    hub_api: Any = None,
) -> TrainerState:
    """The state of the checkpoint `--resume` names (model, optimiser, schedule, RNG states and stream position
    restored), or a fresh one. `--resume latest` takes the newest intact checkpoint (a damaged newer one is named and
    skipped); `--resume hub` first downloads the checkpoint that `hub_strategy=checkpoint` pushed. Settings are
    compared with the checkpoint's (`check_resume_config`)."""
    if args.resume == RESUME_FROM_HUB:
        path = download_hub_checkpoint(args, accelerator, hub_api)
    elif args.resume == "latest":
        path = checkpoints.latest_intact()
    else:
        path = Path(args.resume) if args.resume else None
    if args.resume == "latest" and path is None:
        accelerator.print(f"--resume latest: no checkpoint in {args.output_dir} yet, starting from scratch")
    if path is None:
        return TrainerState()
    saved = checkpoints.load(path, stream, scheduler)
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(TrainerState)})
    if unknown or not isinstance(saved.get("step"), int):
        raise CheckpointError(f"{path / TRAINER_STATE} has unknown keys {unknown} or no integer step")
    state = TrainerState(**saved)
    check_resume_config(path, run_config, args, accelerator)
    if args.resume not in ("latest", RESUME_FROM_HUB):
        # Checkpoints of later steps belong to the run this one branches off: kept, a later --resume latest would
        # continue that run, and a save of the same step would mix the two.
        newer = [
            p
            for p in checkpoints.directories()
            if int(p.name.removeprefix(CHECKPOINT_PREFIX)) > state.step and p.resolve() != path.resolve()
        ]
        if newer and not args.overwrite_output_dir:
            raise CheckpointError(
                f"resuming step {state.step} from {path}, but {args.output_dir} holds later checkpoints "
                f"({', '.join(p.name for p in newer)}) of the run this one would replace; pass --overwrite_output_dir "
                "to delete them, or resume into another output_dir"
            )
        if newer and accelerator.is_main_process:
            for later in newer:
                shutil.rmtree(later)
            accelerator.print(f"--overwrite_output_dir: deleted {', '.join(p.name for p in newer)}")
        accelerator.wait_for_everyone()
    state.last_good_checkpoint = str(path)
    accelerator.print(f"resumed from {path} at step {state.step}")
    return state


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
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(
            f"resume=hub: {args.hub_model_id} has no complete {HUB_CHECKPOINT_DIR}/ (push one with "
            "--hub_strategy checkpoint)"
        )
    return path


def tracker_config(args: PretrainingArguments) -> dict[str, Any]:
    """The recipe as tracker hyper-parameters (scalars as they are, anything else as JSON)."""
    return {
        k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in dataclasses.asdict(args).items()
    }


# ----------------------------------------------------------------------------------------------- one step


def backward(run: Run, loss: torch.Tensor) -> bool:
    """Backward pass of a micro-batch whose loss is finite on every rank; at the last micro-batch of a step also the
    gradient clipping. Returns False (no backward, or a non-finite gradient norm) when the step must be skipped."""
    accelerator = run.accelerator
    finite = torch.isfinite(loss.detach()).float()
    finite = bool(accelerator.reduce(finite, reduction="sum").item() == accelerator.num_processes)
    if finite:
        accelerator.backward(loss)
        if accelerator.sync_gradients and run.args.max_grad_norm > 0:
            norm = accelerator.clip_grad_norm_(run.model.parameters(), run.args.max_grad_norm)
            finite = bool(torch.isfinite(norm))
    return finite


def finish_step(run: Run, outputs: list[EclipForPreTrainingOutput]) -> None:
    """After a good optimiser step: the schedule, the temperature clamp, the EMA update of the momentum model (Eq. 8)
    and the enqueue of the step's micro-batches, in order."""
    run.scheduler.step()
    with torch.no_grad():  # temperature clamp (CLIP): tau stays >= 1 / exp(logit_scale_max)
        run.pretrainer.eclip.logit_scale.clamp_(0.0, run.config.logit_scale_max)
    run.pretrainer.momentum_update()
    for output in outputs:
        run.pretrainer.enqueue(output)
    run.state.step += 1
    run.state.samples += run.global_batch
    run.progress.update(1)


def skip_step(run: Run, consecutive_bad: int) -> None:
    """Counts a skipped step; raises `NonFiniteLossError` after `max_consecutive_nonfinite` in a row."""
    run.state.skipped_nonfinite += 1
    run.accelerator.print(
        f"non-finite loss or gradient at step {run.state.step + 1}: batch skipped ({consecutive_bad} in a row)"
    )
    if consecutive_bad >= run.args.max_consecutive_nonfinite:
        good = run.state.last_good_checkpoint or "none (no checkpoint was saved yet)"
        raise NonFiniteLossError(
            f"{consecutive_bad} consecutive non-finite losses; stopping. Last good checkpoint: {good}. "
            "Lower the learning rate or check the data, then resume with --resume <checkpoint>."
        )


def time_is_up(run: Run) -> bool:
    """Whether `max_train_minutes` is used up. Every rank takes part in this reduction at every step, so all ranks stop
    at the same step even though each reads its own clock."""
    if run.args.max_train_minutes is None:
        return False
    over_time = float(time.perf_counter() - run.started > 60 * run.args.max_train_minutes)
    return bool(run.accelerator.reduce(torch.tensor(over_time, device=run.accelerator.device), "max") > 0)


# ----------------------------------------------------------------------------------------------- log, evaluate, save


def log_step(
    run: Run,
    window: LogWindow,
    output: EclipForPreTrainingOutput,
    step_callback: Callable[[int, dict[str, float]], None] | None,
) -> None:
    """The window's mean loss terms (averaged over ranks), temperature, learning rates, samples/s and counters, to the
    progress bar, Accelerate's tracker and `metrics.jsonl`."""
    accelerator, step = run.accelerator, run.state.step
    elapsed = time.perf_counter() - window.started
    logs = {name: value / window.micro_batches for name, value in window.sums.items()}
    logs = {
        name: float(accelerator.reduce(torch.tensor(value, device=accelerator.device), "mean"))
        for name, value in logs.items()
    }
    # Parameter groups are named by role (`builders.parameter_groups`): "learning_rate" is the new parameters'.
    learning_rates = {
        group["name"]: rate for group, rate in zip(run.optimizer.param_groups, run.scheduler.get_last_lr())
    }
    logs.update(
        {
            "temperature": float(output.temperature),
            **{
                "learning_rate" if role == "new" else f"learning_rate_{role}": rate
                for role, rate in learning_rates.items()
            },
            "samples_per_second": window.samples / max(elapsed, 1e-9),
            "skipped_nonfinite": run.state.skipped_nonfinite,
            **{name: value for name, value in run.stream.counters.items() if name in COUNTER_NAMES},
        }
    )
    if output.positive_slot_entropy is not None:
        logs["positive_slot_entropy"] = float(output.positive_slot_entropy)
        # Over log N: 1 for a map spread evenly over the patch tokens, 0 for a single token.
        logs["positive_slot_entropy_over_log_n"] = logs["positive_slot_entropy"] / math.log(
            run.config.num_patches_per_side**2
        )
    run.progress.set_postfix(
        loss=f"{logs.get('loss', float('nan')):.3f}", samples_s=f"{logs['samples_per_second']:.1f}"
    )
    if accelerator.is_main_process:
        log_scalars(accelerator.trackers, logs, step)
        append_metrics(run.output_dir / METRICS_FILE, {"step": step, **logs})
        if step_callback is not None:
            step_callback(step, logs)


def evaluate_during_training(run: Run) -> None:
    if run.accelerator.is_main_process:
        run.metrics = quick_evaluation(run)
        run.progress.write(f"step {run.state.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in run.metrics.items()))
    run.accelerator.wait_for_everyone()


def quick_evaluation(run: Run) -> dict[str, float]:
    """Zero-shot classification Acc@1 and fine-grained retrieval on held-out products (`evaluation.quick_evaluate`,
    imported here: evaluation is not needed to build a model), logged to the trackers with `num_eval_images`
    grounding overlays and a t-SNE plot. The RNG is forked so that evaluating never changes what training draws next
    (exact resumption). Main process only."""
    from ..evaluation import quick_evaluate_with_figures

    args, accelerator = run.args, run.accelerator
    num_images = args.num_eval_images if accelerator.trackers else 0
    with torch.random.fork_rng(devices=[]):
        metrics, figures = quick_evaluate_with_figures(
            run.pretrainer.eclip,
            run.processor,
            args.catalogue_source(),
            split=args.eval_split,
            max_products=args.eval_max_products,
            num_overlays=num_images,
            tsne=num_images > 0,
        )
    log_scalars(accelerator.trackers, {f"eval/{k}": v for k, v in metrics.items()}, run.state.step)
    log_images(accelerator.trackers, figures, run.state.step)
    return metrics


def save_checkpoint(run: Run, push: bool) -> None:
    """A checkpoint of the run as it is now; with `push`, also an export uploaded to the Hub in the background (skipped
    while the previous upload is still running, as with Trainer's `hub_strategy`)."""
    state = run.state
    state.train_seconds = time.perf_counter() - run.started
    path = run.checkpoints.save(state.step, run.stream, run.scheduler, dataclasses.asdict(state), run.run_config)
    state.last_good_checkpoint = str(path)
    if not push or run.pusher is None or run.args.hub_strategy == "end":
        return
    if run.pusher.busy():
        run.pusher.skipped += 1
        return
    staging = run.output_dir / f".hub-push-step-{state.step}"
    card = render_model_card(run.args, run.config, run.metrics, run_summary(run))
    export_pretrained(run.pretrainer.eclip, run.processor, staging, card)
    checkpoint = path if run.args.hub_strategy == "checkpoint" else None
    run.pusher.push_checkpoint(stage_for_hub(staging, staging, checkpoint), state.step)


def run_summary(run: Run) -> dict[str, Any]:
    """The state and setup of the run, for `train_summary.json` and the model card."""
    state = run.state
    return {
        **dataclasses.asdict(state),
        "world_size": run.accelerator.num_processes,
        "global_batch_size": run.global_batch,
        "device": str(run.accelerator.device),
        "mixed_precision": run.accelerator.mixed_precision,
        "samples_per_second": state.samples / max(state.train_seconds, 1e-9),
        "train_products": run.catalogue_products.get(run.args.train_split),
    }


def main(argv: list[str] | None = None) -> None:
    """The command line: `python -m modeling_eclip.training --config recipe-demo [--flag value ...]`."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    result = pretrain(parse_arguments(argv))
    if result.export_dir is not None:
        print(f"exported the model after {result.step} steps to {result.export_dir}")
        for name, value in sorted(result.metrics.items()):
            print(f"  {name}: {value:.4f}")
