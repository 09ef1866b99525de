# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""What a training run returns or raises, shared by pretraining (`loop.py`) and the detection fine-tuning
(`modeling_eclip.detection.finetune`), so neither imports the other's loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class NonFiniteLossError(RuntimeError):
    """Raised after `max_consecutive_nonfinite` non-finite losses in a row."""


@dataclass
class PretrainingResult:
    """The last step, the export folder (None on the processes that do not write it), the final evaluation and the
    run summary."""

    step: int
    export_dir: Path | None
    metrics: dict[str, float]
    summary: dict[str, Any]
