# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The files of a run directory that training writes as it goes: `checkpoint-<step>` directories (complete or absent,
checked before use, for exact resumption) and `metrics.jsonl`.

What a checkpoint holds, and how each part is read back (nothing in it can run code when loaded):

- `model.safetensors`: the pretraining model (online and momentum models, queues), safetensors;
- `optimizer.bin`: AdamW's state, a torch file read with `torch.load(weights_only=True)` (tensors and plain data
  only; anything else is refused);
- `scheduler_state.json`: the learning-rate schedule's counters and learning rates, JSON (not Accelerate's
  `custom_checkpoint_0.pkl`, which Accelerate reads with `weights_only=False`);
- `rng_state_rank<r>.json`: the Python, NumPy, torch and CUDA generator states of each process, JSON (Accelerate's
  `random_states_<r>.pkl` is removed; a missing or unreadable RNG state is an error, not a different run);
- `stream_state_rank<r>.json`: each process's position in the data stream, JSON;
- `run_config.json`: the recipe, the model config and the catalogue and tokenizer fingerprints the run started with,
  JSON (resume compares them, see `resume.RESUME_REFUSED`);
- `trainer_state.json`: the loop's counters, JSON;
- `checkpoint_manifest.json`: the size and SHA-256 of every other file of the checkpoint (`trainer_state.json` and the
  files of any subfolder included), JSON, written last. A checkpoint is complete when it has one, and intact when every
  file matches it and no other file is there (`verify_checkpoint`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..data.files import file_sha256

CHECKPOINT_PREFIX = "checkpoint-"
TMP_CHECKPOINT_PREFIX = "tmp-checkpoint-"
TRAINER_STATE = "trainer_state.json"
STREAM_STATE = "stream_state_rank{rank}.json"
RNG_STATE = "rng_state_rank{rank}.json"
SCHEDULER_STATE = "scheduler_state.json"
RUN_CONFIG = "run_config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_MANIFEST = "checkpoint_manifest.json"
# The manifest's {"files": {path: {"bytes": size, "sha256": digest}}}: every other file of the checkpoint, by its path
# relative to the checkpoint folder (Accelerate writes sharded FSDP states as subfolders).
MANIFEST_KEY = "files"
# What Accelerate's save_state writes for the RNG states, replaced by RNG_STATE (see the module docstring).
ACCELERATE_RNG_STATE = "random_states_{rank}.pkl"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed exactly: damaged, unreadable, unsafe, or written by another setup."""


class DataPosition(Protocol):
    """A data stream whose position every checkpoint saves per rank (`data.stream.ProductPairStream`,
    `detection.data.DetectionBatches`)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CheckpointManager:
    """`checkpoint-<step>` directories under `output_dir`, each complete or absent, checked before they are loaded.

    Every rank writes into `tmp-checkpoint-<step>` (Accelerate's model and optimiser state; its RNG states, data-stream
    position as JSON); after a barrier the main process writes the schedule, the run config, `trainer_state.json` and
    last the manifest (the size and SHA-256 of every other file) and renames the directory, which is atomic on one
    file system. A checkpoint of the same step replaces the old one. Only the newest `save_total_limit` checkpoints
    are kept; a `checkpoint-<step>` that is a symbolic link (moved to another disk) is rotated by removing the link.
    `output_dir` must be shared by the ranks (multi-node: a shared file system). `run_config`, what the run was, is
    kept with every checkpoint (a resume compares it).
    """

    def __init__(
        self, accelerator: Any, output_dir: str | os.PathLike, save_total_limit: int, run_config: Mapping[str, Any]
    ) -> None:
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.save_total_limit = save_total_limit
        self.run_config = run_config

    def directories(self) -> list[Path]:
        """Every `checkpoint-<step>` directory, complete or not, oldest first."""
        found = [
            p
            for p in self.output_dir.glob(f"{CHECKPOINT_PREFIX}*")
            if p.is_dir() and p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()
        ]
        return sorted(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)))

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (with a manifest), oldest first (rotation counts these)."""
        return [p for p in self.directories() if (p / CHECKPOINT_MANIFEST).is_file()]

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def latest_intact(self) -> Path | None:
        """The newest checkpoint that passes `verify`; damaged newer ones are named on the way. None when the
        directory has no checkpoint at all; `CheckpointError` when it has some and none is intact."""
        damaged = []
        for path in reversed(self.directories()):
            problem = verify_checkpoint(path)
            if problem is None:
                if damaged:
                    self.accelerator.print(
                        f"--resume latest: {'; '.join(damaged)}; resuming from {path.name}, the newest intact one"
                    )
                return path
            damaged.append(f"{path.name} is damaged ({problem})")
        if damaged:
            raise CheckpointError(
                f"--resume latest: no intact checkpoint in {self.output_dir}: {'; '.join(damaged)}. Resume from "
                "another copy with --resume <path>, or start over with --overwrite_output_dir"
            )
        return None

    def remove_incomplete(self) -> None:
        """Deletes temporary directories left by a run that was killed while saving (main process)."""
        if self.accelerator.is_main_process:
            for path in self.output_dir.glob(f"{TMP_CHECKPOINT_PREFIX}*"):
                remove_path(path)
        self.accelerator.wait_for_everyone()

    def save(self, step: int, stream: DataPosition, scheduler: Any, trainer_state: dict[str, Any]) -> Path:
        final = self.output_dir / f"{CHECKPOINT_PREFIX}{step}"
        tmp = self.output_dir / f"{TMP_CHECKPOINT_PREFIX}{step}"
        accelerator, rank = self.accelerator, self.accelerator.process_index
        if accelerator.is_main_process:
            remove_path(tmp)
        accelerator.wait_for_everyone()
        tmp.mkdir(parents=True, exist_ok=True)
        accelerator.save_state(str(tmp))
        (tmp / ACCELERATE_RNG_STATE.format(rank=rank)).unlink(missing_ok=True)  # a pickle; kept as JSON instead
        write_json(tmp / RNG_STATE.format(rank=rank), rng_state())
        write_json(tmp / STREAM_STATE.format(rank=rank), stream.state_dict())
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_json(tmp / SCHEDULER_STATE, scheduler.state_dict())
            write_json(tmp / RUN_CONFIG, self.run_config)
            write_json(tmp / TRAINER_STATE, {**trainer_state, "step": step, "last_good_checkpoint": str(final)})
            manifest = {name: _file_entry(tmp / name) for name in sorted(_checkpoint_files(tmp))}
            write_json(tmp / CHECKPOINT_MANIFEST, {MANIFEST_KEY: manifest})
            _fsync_tree(tmp)
            if os.path.lexists(final):  # the same step saved before (a resumed run, or an older run): the new one wins
                replaced = self.output_dir / f"{TMP_CHECKPOINT_PREFIX}replaced-{final.name}"
                remove_path(replaced)
                os.replace(final, replaced)
                os.replace(tmp, final)
                remove_path(replaced)
            else:
                os.replace(tmp, final)
            for old in self.checkpoints()[: -self.save_total_limit]:
                # Renamed first, so a kill during the deletion leaves a temporary directory (removed at the next
                # start), never a half-deleted checkpoint-N.
                doomed = self.output_dir / f"{TMP_CHECKPOINT_PREFIX}deleted-{old.name}"
                os.replace(old, doomed)
                remove_path(doomed)
        accelerator.wait_for_everyone()
        return final

    def load(self, path: Path, stream: DataPosition, scheduler: Any) -> dict[str, Any]:
        """Checks `path` (`verify_checkpoint`), restores the model, optimiser, schedule, RNG states and this rank's
        stream position; returns the trainer state. Raises `CheckpointError` naming what is wrong."""
        accelerator, rank = self.accelerator, self.accelerator.process_index
        problem = verify_checkpoint(path)
        if problem is not None:
            raise CheckpointError(f"{path} is damaged ({problem}); resume from an intact checkpoint")
        saved_ranks = len(list(path.glob(STREAM_STATE.format(rank="*"))))
        if saved_ranks != accelerator.num_processes:
            raise CheckpointError(
                f"{path} was saved by {saved_ranks} process(es), {accelerator.num_processes} are running now; "
                "resume with the same number of processes"
            )
        try:
            # weights_only: the optimiser state may hold tensors and plain data only (Accelerate's default, made
            # explicit); the model is safetensors.
            accelerator.load_state(str(path), load_kwargs={"weights_only": True})
        except Exception as error:  # torch reports a refused pickle as UnpicklingError, a damaged file otherwise
            raise CheckpointError(
                f"{path}: the model or optimiser state cannot be loaded safely ({type(error).__name__}: {error})"
            ) from error
        load_scheduler_state(scheduler, path / SCHEDULER_STATE)
        load_rng_state(path / RNG_STATE.format(rank=rank))
        stream_state = path / STREAM_STATE.format(rank=rank)
        try:
            stream.load_state_dict(read_json(stream_state))
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"the stream position {stream_state} cannot be restored ({error})") from error
        try:
            state = read_json(path / TRAINER_STATE)
        except (OSError, ValueError) as error:  # intact by its manifest, so the manifest was rewritten with it
            raise CheckpointError(f"{path / TRAINER_STATE} is unreadable ({error})") from error
        if not isinstance(state, dict):
            raise CheckpointError(f"{path / TRAINER_STATE} holds {type(state).__name__}, not the trainer state")
        return state


def verify_checkpoint(path: Path) -> str | None:
    """What is wrong with a checkpoint directory (no manifest, a missing, truncated or added file, a file whose
    SHA-256 differs from the one `checkpoint_manifest.json` records, `trainer_state.json` included), or None when it
    is intact."""
    if not path.is_dir():
        return "it is not a folder" if path.exists() else "it does not exist"
    try:
        manifest = read_json(path / CHECKPOINT_MANIFEST)
    except FileNotFoundError:
        try:  # only to say why: versions before the manifest file kept the checksums in trainer_state.json
            older = MANIFEST_KEY in read_json(path / TRAINER_STATE)
        except (OSError, ValueError, TypeError):
            older = False
        reason = f": written by an older version, which did not checksum {TRAINER_STATE}" if older else ""
        return f"no {CHECKPOINT_MANIFEST}{reason}"
    except (OSError, ValueError) as error:
        return f"{CHECKPOINT_MANIFEST} is unreadable: {error}"
    files = manifest.get(MANIFEST_KEY) if isinstance(manifest, dict) else None
    entries = files.values() if isinstance(files, dict) else ()
    if not isinstance(files, dict) or TRAINER_STATE not in files or not all(isinstance(e, dict) for e in entries):
        return f"{CHECKPOINT_MANIFEST} does not list the checkpoint's files ({TRAINER_STATE} among them)"
    # A file the save did not write is refused, not ignored: some loader (Accelerate's, for one) might pick it up.
    extra = sorted(_checkpoint_files(path) - set(files) - {CHECKPOINT_MANIFEST})
    if extra:
        return f"it holds files that were not saved with it: {extra}"
    for name, expected in files.items():
        file = path / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != expected.get("bytes"):
            return f"{name} has {size} bytes, {expected.get('bytes')} were saved"
        if file_sha256(file) != expected.get("sha256"):
            return f"{name} differs from what was saved (SHA-256)"
    return None


def rng_state() -> dict[str, Any]:
    """This process's generator states as JSON-able lists: Python, NumPy's global, torch's CPU and every CUDA
    device's (what Accelerate's `random_states_<r>.pkl` holds on these devices)."""
    version, keys, gauss = random.getstate()
    name, np_keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(keys), gauss],
        "numpy": [name, np_keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [device_state.tolist() for device_state in torch.cuda.get_rng_state_all()]
    return state


def load_rng_state(path: Path) -> None:
    """Restores `rng_state()` from `path`; a missing or unreadable state raises `CheckpointError` (the run would
    draw other random numbers than the uninterrupted one)."""
    try:
        state = read_json(path)
        version, keys, gauss = state["python"]
        name, np_keys, position, has_gauss, cached = state["numpy"]
        saved_cuda = state.get("cuda", [])
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if len(saved_cuda) != cuda_devices:
            raise ValueError(f"it holds {len(saved_cuda)} CUDA generator(s), this process has {cuda_devices}")
        random.setstate((int(version), tuple(int(k) for k in keys), None if gauss is None else float(gauss)))
        np.random.set_state((str(name), np.asarray(np_keys, dtype=np.uint32), int(position), int(has_gauss), cached))
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        if saved_cuda:
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in saved_cuda])
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"the RNG state {path} is missing or unreadable ({type(error).__name__}: {error}); resuming without it "
            "would not reproduce the run"
        ) from error


def load_scheduler_state(scheduler: Any, path: Path) -> None:
    """Restores the schedule from JSON. Only the keys the schedule itself has are accepted, with plain values: the
    state cannot set anything else on the object."""
    expected = scheduler.state_dict()
    try:
        state = read_json(path)
        problem = _shape_difference(state, expected)
        if problem:
            raise ValueError(problem)
        scheduler.load_state_dict(state)
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"the schedule state {path} is unreadable ({error})") from error


def _shape_difference(value: Any, expected: Any, where: str = "the state") -> str | None:
    """How `value` (read from JSON) differs in structure from `expected`: other keys, lengths or value types (numbers
    of either kind match), or None."""
    number = (int, float)
    if isinstance(expected, dict):
        if not isinstance(value, dict) or set(value) != set(expected):
            found = sorted(value) if isinstance(value, dict) else type(value).__name__
            return f"{where} has {found}, expected keys {sorted(expected)}"
        problems = (_shape_difference(value[k], expected[k], f"{where}[{k!r}]") for k in expected)
    elif isinstance(expected, list):
        if not isinstance(value, list) or len(value) != len(expected):
            return f"{where} should be a list of {len(expected)}"
        problems = (_shape_difference(v, e, f"{where}[{i}]") for i, (v, e) in enumerate(zip(value, expected)))
    elif isinstance(expected, bool) or expected is None or not isinstance(expected, number):
        same = type(value) is type(expected)
        return None if same else f"{where} is {type(value).__name__}, expected {type(expected).__name__}"
    else:
        ok = isinstance(value, number) and not isinstance(value, bool)
        return None if ok else f"{where} is {type(value).__name__}, expected a number"
    return next((problem for problem in problems if problem), None)


def append_metrics(path: Path, entry: Mapping[str, Any]) -> None:
    """Appends one JSON line; a line cut short by a killed run is closed first, so every later line stays whole."""
    cut_short = False
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            cut_short = handle.read(1) != b"\n"
    with open(path, "a") as handle:
        handle.write(("\n" if cut_short else "") + json.dumps(entry) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Keeps the whole lines of `metrics.jsonl` up to `step` (a resumed run logs the later steps again, so the file
    never holds two runs' values for one step); replaced atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
            kept.append(line + "\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True))


def _checkpoint_files(root: Path) -> set[str]:
    """The paths, relative to `root`, of every file under it (links included, as what they point to is read)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _fsync_tree(root: Path) -> None:
    """Flushes every file of a checkpoint to disk before it is renamed into place."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def remove_run_files(output_dir: str | os.PathLike, names: Sequence[str], patterns: Sequence[str] = ()) -> list[str]:
    """Deletes what an earlier run wrote into `output_dir` (its checkpoints, complete or not, plus the files and
    folders `names` and `patterns` match); other files are left alone. Returns the names deleted."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    doomed = [output_dir / name for name in names if (output_dir / name).exists()]
    for pattern in (f"{CHECKPOINT_PREFIX}*", f"{TMP_CHECKPOINT_PREFIX}*", *patterns):
        doomed += sorted(output_dir.glob(pattern))
    for path in doomed:
        remove_path(path)
    return [path.name for path in doomed]


def remove_path(path: Path) -> None:
    """Deletes a folder, a file or a symbolic link (nothing when it is missing). A link is removed itself and never
    followed: a checkpoint folder linked from another disk keeps what it points to (`shutil.rmtree` refuses links
    mid-run otherwise)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)
