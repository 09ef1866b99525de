# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The pretraining loop, `pretrain`: start the run (`run.start_run`), loop, log, checkpoint, export (like open_clip's
`train_one_epoch`).

One optimiser step is `gradient_accumulation_steps` micro-batches through Accelerate: forward (L_itc alone before
`instance_objectives_start_step`), backward, and at the last micro-batch gradient clipping and the AdamW step. A step
whose loss or gradient is not finite on some rank is skipped whole and counted. After a good step: the learning-rate
schedule (`transformers.get_scheduler`; by default warm-up, then linear decay, Sec. 4.1), the temperature clamp, the
EMA update of the momentum model (Eq. 8) and the enqueue of the step's micro-batches, in order. Then logging
(Accelerate's trackers and `metrics.jsonl`; images at evaluations), periodic evaluation and checkpoints, and a
wall-clock budget. At the end: a last checkpoint, the evaluation for the model card, the export and the Hub upload.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from ..data.stream import COUNTER_NAMES, REJECTION_COUNTERS, ProductPairStream
from ..modeling_eclip import LOSS_NAMES, EclipForPreTrainingOutput
from .arguments import PretrainingArguments, parse_arguments
from .checkpoints import METRICS_FILE, append_metrics, write_json
from .export import EXPORT_DIR, export_pretrained, render_model_card, stage_for_hub
from .results import NonFiniteLossError, PretrainingResult
from .resume import TrainerState
from .run import SUMMARY_FILE, Learner, Run, start_run
from .tracking import log_images, log_scalars

StepCallback = Callable[[int, dict[str, float]], None]


class EmptyEpochError(RuntimeError):
    """Raised when a whole epoch of the train split gives no full batch: the loop would otherwise never take a step."""


@dataclass
class OptimiserStep:
    """The micro-batches of the optimiser step in progress."""

    outputs: list[EclipForPreTrainingOutput] = field(default_factory=list)  # the finite ones
    bad: bool = False  # some micro-batch had a non-finite loss or gradient: the step is skipped


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
    args: PretrainingArguments, hub_api: Any = None, step_callback: StepCallback | None = None
) -> PretrainingResult:
    """Runs pretraining as described in the module docstring; `python -m modeling_eclip.training` is its command line.

    `hub_api` replaces `huggingface_hub.HfApi()` (tests); `step_callback(step, logs)` is called on the main process
    after every logged step.
    """
    run = start_run(args, hub_api)
    stop_reason = train(run, step_callback)
    return finish_run(run, stop_reason)


def train(run: Run, step_callback: StepCallback | None) -> str:
    """Micro-batches until `max_steps` optimiser steps are done or the time budget is used up; returns which."""
    args, accelerator, state = run.args, run.accelerator, run.state
    window, step, consecutive_bad = LogWindow(), OptimiserStep(), 0
    while state.step < args.max_steps:
        for batch in run.stream:  # one epoch; the stream then moves on to the next
            output = micro_batch(run, batch, step)
            if output is not None:
                window.add(output)
            window.samples += batch["pixel_values"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue  # the next micro-batch of this optimiser step

            finished, step = step, OptimiserStep()
            if finished.bad:
                consecutive_bad += 1
                skip_step(state, consecutive_bad, args.max_consecutive_nonfinite, accelerator)
                continue
            consecutive_bad = 0
            finish_step(run.learner, finished.outputs)
            state.step += 1
            state.samples += run.global_batch
            run.progress.update(1)

            if state.step % args.logging_steps == 0 or state.step == args.max_steps:
                log_step(run, window, finished.outputs[-1], step_callback)
                window = LogWindow()
            if args.eval_steps and state.step % args.eval_steps == 0 and state.step < args.max_steps:
                evaluate_during_training(run)
            if args.save_steps and state.step % args.save_steps == 0 and state.step < args.max_steps:
                save_checkpoint(run, push=True)
            if state.step >= args.max_steps:
                break
            if time_is_up(accelerator, run.started, args.max_train_minutes):
                accelerator.print(f"time budget of {args.max_train_minutes} min used up at step {state.step}")
                return "max_train_minutes"
        check_epoch_gave_batches(run.stream, accelerator.process_index)
    return "max_steps"


def check_epoch_gave_batches(stream: ProductPairStream, process_index: int) -> None:
    """Raises `EmptyEpochError` with the counts when the epoch just finished started at its beginning and gave no
    batch (too few products with two readable images for one batch of different products)."""
    epoch = stream.last_epoch
    if epoch is None or not epoch["from_start"] or epoch["batches"]:
        return
    usable = epoch["products"] - sum(epoch[name] for name in REJECTION_COUNTERS.values())
    raise EmptyEpochError(
        f"epoch {epoch['epoch']} of the train split gave no full batch on process {process_index}: "
        f"{epoch['products']} products read, {epoch['skipped_single_image_products']} of them skipped with fewer than "
        f"two readable images ({epoch['skipped_corrupt_images']} unreadable images), "
        f"{epoch['skipped_blank_title_products']} with a blank title, {epoch['skipped_no_product_id_products']} "
        f"without a product id, {usable} usable, "
        f"{epoch['deferred_duplicates']} held over as duplicates; a batch needs {stream.batch_size} different "
        "products. Lower per_device_train_batch_size, or fix the catalogue's images."
    )


# ----------------------------------------------------------------------------------------------- one step


def micro_batch(run: Run, batch: dict[str, torch.Tensor], step: OptimiserStep) -> EclipForPreTrainingOutput | None:
    """Forward and backward of one micro-batch of `step`; at its last micro-batch also the AdamW step, left out when
    some micro-batch of it was not finite. Returns the output when its loss and gradients are finite on every rank."""
    args, accelerator, learner = run.args, run.accelerator, run.learner
    batch = {name: value.to(accelerator.device) for name, value in batch.items()}
    if run.state.step == args.instance_objectives_start_step > 0:
        # The momentum targets start from the image features the ITC phase learned (idempotent per step).
        learner.pretrainer.copy_online_to_momentum()
    with accelerator.accumulate(learner.model):
        output = learner.model(**batch, itc_only=run.state.step < args.instance_objectives_start_step)
        finite = backward(accelerator, learner.model, output.loss, args.max_grad_norm)
        step.bad |= not finite
        if accelerator.sync_gradients:
            if not step.bad:
                learner.optimizer.step()
            learner.optimizer.zero_grad(set_to_none=True)
    if not finite:
        return None
    step.outputs.append(output)
    return output


def backward(accelerator: Accelerator, model: torch.nn.Module, loss: torch.Tensor, max_grad_norm: float) -> bool:
    """Backward pass of a micro-batch whose loss is finite on every rank; at the last micro-batch of a step also the
    gradient clipping. Returns False (no backward, or a non-finite gradient norm) when the step must be skipped."""
    finite = torch.isfinite(loss.detach()).float()
    finite = bool(accelerator.reduce(finite, reduction="sum").item() == accelerator.num_processes)
    if finite:
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm > 0:
            norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            finite = bool(torch.isfinite(norm))
    return finite


def finish_step(learner: Learner, outputs: list[EclipForPreTrainingOutput]) -> None:
    """After a good optimiser step: the schedule, the temperature clamp, the EMA update of the momentum model (Eq. 8)
    and the enqueue of the step's micro-batches, in order."""
    learner.scheduler.step()
    with torch.no_grad():  # temperature clamp (CLIP): tau stays >= 1 / exp(logit_scale_max)
        learner.pretrainer.eclip.logit_scale.clamp_(0.0, learner.config.logit_scale_max)
    learner.pretrainer.momentum_update()
    for output in outputs:
        learner.pretrainer.enqueue(output)


def skip_step(state: TrainerState, consecutive_bad: int, max_consecutive: int, accelerator: Accelerator) -> None:
    """Counts a skipped step; raises `NonFiniteLossError` after `max_consecutive` in a row."""
    state.skipped_nonfinite += 1
    accelerator.print(
        f"non-finite loss or gradient at step {state.step + 1}: batch skipped ({consecutive_bad} in a row)"
    )
    if consecutive_bad >= max_consecutive:
        good = state.last_good_checkpoint or "none (no checkpoint was saved yet)"
        raise NonFiniteLossError(
            f"{consecutive_bad} consecutive non-finite losses; stopping. Last good checkpoint: {good}. "
            "Lower the learning rate or check the data, then resume with --resume <checkpoint>."
        )


def time_is_up(accelerator: Accelerator, started: float, max_train_minutes: float | None) -> bool:
    """Whether `max_train_minutes` since `started` are used up. Every rank takes part in this reduction at every step,
    so all ranks stop at the same step even though each reads its own clock."""
    if max_train_minutes is None:
        return False
    over_time = float(time.perf_counter() - started > 60 * max_train_minutes)
    return bool(accelerator.reduce(torch.tensor(over_time, device=accelerator.device), "max") > 0)


# ----------------------------------------------------------------------------------------------- log, evaluate, save


def log_step(
    run: Run, window: LogWindow, output: EclipForPreTrainingOutput, step_callback: StepCallback | None
) -> None:
    """The window's logs (`step_logs`) to the progress bar, Accelerate's tracker and `metrics.jsonl`."""
    logs, step = step_logs(run, window, output), run.state.step
    run.progress.set_postfix(
        loss=f"{logs.get('loss', float('nan')):.3f}", samples_s=f"{logs['samples_per_second']:.1f}"
    )
    if run.accelerator.is_main_process:
        log_scalars(run.accelerator.trackers, logs, step)
        append_metrics(run.output_dir / METRICS_FILE, {"step": step, **logs})
        if step_callback is not None:
            step_callback(step, logs)


def step_logs(run: Run, window: LogWindow, output: EclipForPreTrainingOutput) -> dict[str, float]:
    """The window's mean loss terms (averaged over ranks), the temperature, learning rates, samples/s, counters and
    the positive slot's map entropy of the step's last micro-batch."""
    accelerator, learner = run.accelerator, run.learner
    elapsed = time.perf_counter() - window.started
    logs = {name: value / window.micro_batches for name, value in window.sums.items()}
    logs = {
        name: float(accelerator.reduce(torch.tensor(value, device=accelerator.device), "mean"))
        for name, value in logs.items()
    }
    # Parameter groups are named by role (`builders.parameter_groups`): "learning_rate" is the new parameters'.
    learning_rates = {
        group["name"]: rate for group, rate in zip(learner.optimizer.param_groups, learner.scheduler.get_last_lr())
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
            learner.config.num_patches_per_side**2
        )
    return logs


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
            run.learner.pretrainer.eclip,
            run.learner.processor,
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
    state, learner = run.state, run.learner
    state.train_seconds = time.perf_counter() - run.started
    path = run.checkpoints.save(state.step, run.stream, learner.scheduler, dataclasses.asdict(state))
    state.last_good_checkpoint = str(path)
    if not push or run.pusher is None or run.args.hub_strategy == "end":
        return
    if run.pusher.busy():
        run.pusher.skipped += 1
        return
    staging = run.output_dir / f".hub-push-step-{state.step}"
    card = render_model_card(run.args, learner.config, run.metrics, run_summary(run))
    export_pretrained(learner.pretrainer.eclip, learner.processor, staging, card)
    checkpoint = path if run.args.hub_strategy == "checkpoint" else None
    run.pusher.push_checkpoint(stage_for_hub(staging, staging, checkpoint), state.step)


def finish_run(run: Run, stop_reason: str) -> PretrainingResult:
    """A last checkpoint, the export, the evaluation for the model card, the summary and the final Hub upload. The
    export is written before the evaluation, so an evaluation that fails loses no trained model."""
    accelerator, args, learner = run.accelerator, run.args, run.learner
    run.progress.close()
    save_checkpoint(run, push=False)
    export_dir = None
    if accelerator.is_main_process:
        card = render_model_card(args, learner.config, run.metrics, {**run_summary(run), "stop_reason": stop_reason})
        export_dir = export_pretrained(learner.pretrainer.eclip, learner.processor, run.output_dir / EXPORT_DIR, card)
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
        write_final_files(run, export_dir, summary, push=evaluation_error is None)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_initialized():  # leave no gloo group behind (a rank could otherwise hang at exit)
        torch.distributed.destroy_process_group()
    if evaluation_error is not None:
        raise RuntimeError(
            f"the end-of-training evaluation on split {args.eval_split!r} failed ({summary['evaluation_error']}); "
            f"the model was exported to {export_dir} and the last checkpoint is {run.state.last_good_checkpoint}"
        ) from evaluation_error
    return PretrainingResult(step=run.state.step, export_dir=export_dir, metrics=run.metrics, summary=summary)


def write_final_files(run: Run, export_dir: Path, summary: dict[str, Any], push: bool) -> None:
    """The export's model card with the final summary, `train_summary.json`, and with `push` the final Hub upload
    (with the latest checkpoint for `hub_strategy=checkpoint`). Main process."""
    (export_dir / "README.md").write_text(render_model_card(run.args, run.learner.config, run.metrics, summary))
    write_json(run.output_dir / SUMMARY_FILE, summary)
    if run.pusher is not None and push:
        checkpoint = run.checkpoints.latest() if run.args.hub_strategy == "checkpoint" else None
        run.pusher.push_final(stage_for_hub(export_dir, run.output_dir / ".hub-push-final", checkpoint))


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
        "train_products": run.train_products,
    }


def main(argv: list[str] | None = None) -> None:
    """The command line: `python -m modeling_eclip.training --config recipe-demo [--flag value ...]`."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    result = pretrain(parse_arguments(argv))
    if result.export_dir is not None:
        print(f"exported the model after {result.step} steps to {result.export_dir}")
        for name, value in sorted(result.metrics.items()):
            print(f"  {name}: {value:.4f}")
