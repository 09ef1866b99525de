# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The one way the data builders write their output folder: refuse a non-empty one unless asked to replace it, and
replace it whole.

A dataset is built in a sibling staging folder and swapped in only once it is complete, so a crash or an error
never leaves a half-written dataset, and nothing of an earlier build (stale shards, another split assignment)
survives into the new one. Used by the catalogue converter (``modeling_eclip/data/convert.py``), the demo
catalogue builder and the image-tower pretraining set builder.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_output_folder(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """``output`` as a path, after checking it may be written: it must be missing, an empty folder, or (with
    ``overwrite``) a folder to replace. Raises ``FileExistsError`` naming the ``--overwrite`` option otherwise."""
    output = Path(output)
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
    ``output`` is followed: its target is replaced and the link kept. The swap is two renames in one folder; only a
    hard kill between them (microseconds) leaves ``output`` missing, with the old build kept as ``.<name>.old-*``.
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
        old = output.with_name(f".{output.name}.old-{token}")
        if output.exists():
            os.rename(output, old)
        try:
            os.rename(staging, output)
        except BaseException:
            if old.exists():
                os.rename(old, output)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
