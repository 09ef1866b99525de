# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The one way the data builders write their output folder: refuse a non-empty one unless asked to replace it, and
replace it whole.

A dataset is built in a sibling staging folder and swapped in only once it is complete, so a crash or an error never
leaves a half-written dataset, and nothing of an earlier build (stale shards, another split assignment) survives into
the new one. The swap is three renames in one folder: the finished build to ``.<name>.new-<token>``, the old output to
``.<name>.old-<token>``, the finished build to ``<name>``. A hard kill between them leaves the old output in place or
missing, never half of one; the next build into that folder (``check_output_folder``) finishes the swap, or puts the
old output back where no finished build is left, and says so. Used by the catalogue converter
(``modeling_eclip/data/convert.py``), the demo catalogue builder and the image-tower pretraining set builder.
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


def check_output_folder(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """``output`` as a path, after checking it may be written: it must be missing, an empty folder, or (with
    ``overwrite``) a folder to replace. Raises ``FileExistsError`` naming the ``--overwrite`` option otherwise.

    A swap that a hard kill interrupted (``replacing_output_folder``) is finished first (``finish_interrupted_swap``).
    """
    output = Path(output)
    finish_interrupted_swap(output.resolve() if output.is_symlink() else output)
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{output} is not empty; pass --overwrite (overwrite=True) to replace it, or choose another folder"
        )
    return output


@contextmanager
def replacing_output_folder(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty staging folder next to ``output``; when the block ends without an error, the staging folder
    becomes ``output`` (an earlier ``output`` is removed), otherwise it is deleted and ``output`` is left as it was.

    Checks ``output`` first (:func:`check_output_folder`), so enter it before any long build. A symbolic link as
    ``output`` is followed: its target is replaced and the link kept. After a hard kill during the swap, the next call
    for the same ``output`` finishes it (see the module docstring).
    """
    output = check_output_folder(output, overwrite)
    if output.is_symlink():
        output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    # Same folder as the output: the final rename stays on one file system, so it is atomic.
    staging = output.with_name(f".{output.name}.partial-{token}")
    staging.mkdir()
    try:
        yield staging
        finished = output.with_name(f".{output.name}.new-{token}")
        os.rename(staging, finished)  # complete: from here on a killed swap is finished by the next build
        _swap_in(finished, output, token)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(finished: Path, output: Path, token: str) -> None:
    """Renames the complete build ``finished`` to ``output``, moving an existing ``output`` aside and deleting it."""
    old = output.with_name(f".{output.name}.old-{token}")
    if os.path.lexists(output):
        os.rename(output, old)
    try:
        os.rename(finished, output)
    except BaseException:
        if os.path.lexists(old):
            os.rename(old, output)
        shutil.rmtree(finished, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def finish_interrupted_swap(output: Path) -> str | None:
    """Finishes the swap of ``replacing_output_folder`` that a hard kill interrupted for ``output``: the newest
    finished build left beside it becomes ``output`` (whether the kill came before or after the old output was moved
    aside), else a moved-aside old output goes back; leftovers are deleted. Logs and returns what it did (None when
    there was nothing to finish)."""
    pattern = glob.escape(f".{output.name}.")
    finished = sorted(output.parent.glob(f"{pattern}new-*"), key=lambda path: path.stat().st_mtime)
    moved_aside = list(output.parent.glob(f"{pattern}old-*"))
    if not finished and not moved_aside:
        return None
    if finished:
        _swap_in(finished.pop(), output, f"{os.getpid()}-{secrets.token_hex(4)}")
        done = "the finished build it left was put in place"
    elif not os.path.lexists(output):
        os.rename(moved_aside.pop(), output)
        done = "the earlier output it had moved aside was put back"
    else:
        done = "the earlier output it had left beside the new one was deleted"
    for leftover in finished + moved_aside:
        shutil.rmtree(leftover, ignore_errors=True)
    message = f"{output}: a build into this folder was killed while swapping it in; {done}"
    logger.warning(message)
    return message
