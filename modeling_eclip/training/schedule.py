# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The learning-rate schedule of a run, built by `transformers.get_scheduler` for pretraining and the detection
fine-tuning alike. The loops step it once per optimiser step (it is not prepared: Accelerate would step it once per
process) and the checkpoints save it as JSON (`checkpoints.load_scheduler_state`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    scheduler_type: str,
    num_warmup_steps: int,
    num_training_steps: int,
    scheduler_kwargs: Mapping[str, Any] | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """`scheduler_type` (linear, cosine, ...: `transformers.SchedulerType`) with its warm-up over `num_training_steps`
    optimiser steps; `scheduler_kwargs` are the schedule's own arguments (e.g. `num_cycles`)."""
    from transformers import get_scheduler

    return get_scheduler(
        scheduler_type,
        optimizer,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=dict(scheduler_kwargs or {}),
    )


def check_lr_scheduler(
    scheduler_type: str,
    num_warmup_steps: int,
    num_training_steps: int,
    scheduler_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Builds the schedule on a stand-in optimiser, so a bad name or argument fails before compute: a ValueError naming
    `lr_scheduler_type` (and `lr_scheduler_kwargs`)."""
    from transformers import SchedulerType

    names = [kind.value for kind in SchedulerType if kind != SchedulerType.REDUCE_ON_PLATEAU]
    if scheduler_type not in names:
        raise ValueError(f"lr_scheduler_type must be one of {names}, got {scheduler_type!r}")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    try:
        make_lr_scheduler(optimizer, scheduler_type, num_warmup_steps, num_training_steps, scheduler_kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"lr_scheduler_type={scheduler_type!r} with lr_scheduler_kwargs={scheduler_kwargs}: {error}"
        ) from error
