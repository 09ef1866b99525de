# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Experiment trackers through Accelerate: `report_to` as `TrainingArguments` takes it (a name, a list, `all` or
`none`), the run name and project, and images (grounding overlays, the t-SNE plot) logged at evaluation time."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

# What `all` and `none` mean, as in TrainingArguments.report_to.
ALL_TRACKERS, NO_TRACKERS = "all", "none"


def tracker_names() -> list[str]:
    """Every tracker Accelerate integrates (its `LoggerType`), installed or not."""
    from accelerate.utils import LoggerType

    return [logger.value for logger in LoggerType if logger != LoggerType.ALL]


def available_trackers() -> list[str]:
    """The trackers whose package is installed, in Accelerate's order."""
    from accelerate.tracking import get_available_trackers

    return [str(getattr(tracker, "value", tracker)) for tracker in get_available_trackers()]


def parse_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """`report_to` as a list of tracker names: a name, a comma-separated string or a list; `all` is every installed
    tracker and `none` (or an empty value) none. Unknown names raise a ValueError naming `report_to`; whether the
    named trackers are installed is checked by `check_report_to`."""
    if report_to is None:
        return []
    items = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    if ALL_TRACKERS in names:
        if len(names) > 1:
            raise ValueError(f"report_to={report_to!r}: 'all' cannot be combined with other trackers")
        return available_trackers()
    if NO_TRACKERS in names:
        if len(names) > 1:
            raise ValueError(f"report_to={report_to!r}: 'none' cannot be combined with other trackers")
        return []
    known = tracker_names()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"report_to has unknown trackers {unknown}; choose from {known}, 'all' or 'none'")
    return list(dict.fromkeys(names))


def check_report_to(names: Sequence[str]) -> None:
    """Raises a ValueError naming `report_to` when a tracker's package is not installed."""
    missing = [name for name in names if name not in available_trackers()]
    if missing:
        packages = " ".join("mlflow-skinny" if name == "mlflow" else name.replace("_", "-") for name in missing)
        raise ValueError(f"report_to names {missing}, which are not installed: pip install {packages}, or drop them")


def tracker_init_kwargs(names: Sequence[str], run_name: str) -> dict[str, dict[str, Any]]:
    """The run name in the keyword of each tracker that takes one: wandb, trackio and MLflow (the project name is
    `init_trackers`' first argument; TensorBoard writes under `<output_dir>/<project_name>`)."""
    keyword = {"wandb": "name", "trackio": "name", "mlflow": "run_name"}
    return {name: {keyword[name]: run_name} for name in names if name in keyword}


def log_scalars(trackers: Sequence[Any], values: Mapping[str, float], step: int) -> None:
    """`Accelerator.log` for every tracker, with names MLflow accepts there (it rejects `@`: `eval/zero_shot_acc@1` is
    `eval/zero_shot_acc_at_1` in MLflow; the other trackers and `metrics.jsonl` keep the names)."""
    for tracker in trackers:
        if tracker.name == "mlflow":
            tracker.log({mlflow_name(name): value for name, value in values.items()}, step=step)
        else:
            tracker.log(dict(values), step=step)


def mlflow_name(name: str) -> str:
    """A metric or image name in the characters MLflow allows (alphanumerics, `_-. :/`)."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))


def log_images(trackers: Sequence[Any], images: Mapping[str, Image.Image], step: int) -> list[str]:
    """Logs PIL images to every tracker that takes images, each in its own API; returns the trackers that got them."""
    if not images:
        return []
    arrays = {name: np.asarray(image.convert("RGB")) for name, image in images.items()}
    logged = []
    for tracker in trackers:
        if tracker.name == "tensorboard":
            for name, array in arrays.items():
                tracker.writer.add_image(name, array, global_step=step, dataformats="HWC")
        elif tracker.name == "mlflow":
            import mlflow

            for name, image in images.items():
                mlflow.log_image(image.convert("RGB"), key=mlflow_name(name).replace("/", "_"), step=step)
        elif tracker.name == "trackio":
            import trackio

            tracker.log({name: trackio.Image(array) for name, array in arrays.items()}, step=step)
        elif hasattr(tracker, "log_images"):  # wandb, aim, clearml, swanlab: lists of arrays per name
            tracker.log_images({name: [array] for name, array in arrays.items()}, step=step)
        else:
            continue
        logged.append(tracker.name)
    return logged
