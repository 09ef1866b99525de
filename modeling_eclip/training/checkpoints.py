# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The files of a run directory that training writes as it goes: `checkpoint-<step>` directories (complete or absent,
for exact resumption) and `metrics.jsonl`."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.stream import ProductPairStream

CHECKPOINT_PREFIX = "checkpoint-"
TMP_CHECKPOINT_PREFIX = "tmp-checkpoint-"
TRAINER_STATE = "trainer_state.json"
STREAM_STATE = "stream_state_rank{rank}.json"
METRICS_FILE = "metrics.jsonl"


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
        write_json(tmp / STREAM_STATE.format(rank=accelerator.process_index), stream.state_dict())
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            # The checkpoint is complete once renamed, and it is the newest, so rotation never removes it.
            write_json(tmp / TRAINER_STATE, {**trainer_state, "step": step, "last_good_checkpoint": str(final)})
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


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True))


def _fsync_tree(root: Path) -> None:
    """Flushes every file of a checkpoint to disk before it is renamed into place."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
