# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Publish a finished catalogue folder as a Hugging Face Hub dataset repository: the one upload of every producer.

The catalogue converter (``modeling_eclip/data/convert.py``), the demo catalogue builder
(``python -m modeling_eclip.demo.catalogue``) and the migration of old shards (``modeling_eclip/data/migrate.py``)
take ``--push_to_hub REPO_ID`` (with ``--private`` and ``--commit_message``) and call :func:`push_catalogue` once
their output folder has been swapped in whole. The folder is a dataset repository as is (``shard_format.py``), so it
is uploaded unchanged with ``huggingface_hub``; ``load_dataset(REPO_ID)`` then reads it like the local folder.
:func:`run_build_command` is the command body of the converter, the demo builder and the image-tower set.

A folder that is not a complete catalogue (no dataset card, a split with missing files, files of an unfinished
build) is refused before anything is uploaded. An existing folder is pushed (again, after a failed upload) with::

    python -m modeling_eclip.data.hub data/shop --push_to_hub my-org/shop-catalogue --private
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .shard_format import CARD_NAME, DATA_FOLDER

DEFAULT_COMMIT_MESSAGE = "Upload ECLIP product catalogue"
# `<split>-NNNNN-of-MMMMM.parquet`, as `ShardWriter` names the files of a finished split.
_SHARD_NAME = re.compile(r"^(?P<split>\w+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")
Built = TypeVar("Built")


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--push_to_hub REPO_ID``, ``--private`` and ``--commit_message`` (also spelt with dashes)."""
    group = parser.add_argument_group("publishing on the Hugging Face Hub")
    group.add_argument(
        "--push_to_hub", "--push-to-hub", metavar="REPO_ID", default=None,
        help="upload the finished catalogue to this Hub dataset repository (created if missing; needs a token with "
        "write access, e.g. from `hf auth login`)",
    )  # fmt: skip
    group.add_argument(
        "--private", action="store_true", help="create the dataset repository private (an existing one keeps its own)"
    )
    group.add_argument(
        "--commit_message", "--commit-message", default=DEFAULT_COMMIT_MESSAGE,
        help=f"message of the upload commit (default: {DEFAULT_COMMIT_MESSAGE!r})",
    )  # fmt: skip


def check_repo_id(repo_id: str | None) -> None:
    """Raise ``ValueError`` naming ``--push_to_hub`` when ``repo_id`` is no valid Hub repository id; call it before a
    long build, so a typo does not cost the build."""
    if repo_id is None:
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--push_to_hub: {repo_id!r} is not a Hub repository id (ORG/NAME): {error}") from None


def check_complete_catalogue(folder: str | os.PathLike) -> Path:
    """``folder`` as a path after checking it is a finished catalogue: a dataset card, data files of at least one
    split, each split with all its ``-of-MMMMM`` files, and no file of an unfinished build (temporary or partial
    files, which start with a dot). Raises ``ValueError`` naming the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if not (folder / CARD_NAME).is_file():
        raise ValueError(f"{folder} has no dataset card ({CARD_NAME}); only a finished catalogue can be pushed")
    unfinished = sorted(p.relative_to(folder).as_posix() for p in folder.rglob(".*") if p.name != ".gitattributes")
    if unfinished:
        raise ValueError(f"{folder} holds files of an unfinished build ({', '.join(unfinished[:5])}); rebuild it")
    found: dict[str, dict[int, int]] = {}
    for path in (folder / DATA_FOLDER).glob("*.parquet"):
        match = _SHARD_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path} is not named <split>-NNNNN-of-MMMMM.parquet")
        found.setdefault(match["split"], {})[int(match["index"])] = int(match["count"])
    if not found:
        raise ValueError(f"{folder / DATA_FOLDER} holds no <split>-NNNNN-of-MMMMM.parquet files")
    for split, files in sorted(found.items()):
        counts = set(files.values())
        if len(counts) != 1 or sorted(files) != list(range(counts.pop())):
            raise ValueError(f"{folder / DATA_FOLDER}: the {split} files are incomplete or of two builds")
    return folder


def push_catalogue(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    api: Any = None,
) -> str:
    """Upload the catalogue ``folder`` (checked by :func:`check_complete_catalogue`) to the Hub dataset repository
    ``repo_id``, creating it (``private``) if missing, and return the repository's URL.

    ``api`` is a ``huggingface_hub.HfApi`` (default: a new one, with the token of ``hf auth login`` or ``HF_TOKEN``);
    tests pass a stand-in. Files of the repository that the folder lacks are kept (a new build with fewer files
    leaves old ones; delete them on the Hub, or push to a new repository).
    """
    folder = check_complete_catalogue(folder)
    check_repo_id(repo_id)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder), commit_message=commit_message)
    return str(url)


def push_from_arguments(folder: str | os.PathLike, args: argparse.Namespace, api: Any = None) -> None:
    """:func:`push_catalogue` with the options of :func:`add_push_arguments` (nothing without ``--push_to_hub``);
    prints where the catalogue went."""
    if not args.push_to_hub:
        return
    check_complete_catalogue(folder)
    try:
        url = push_catalogue(folder, args.push_to_hub, args.private, args.commit_message, api=api)
    except Exception:  # network, token, permissions: the folder is fine, say how to retry the upload alone
        print(
            f"error: the upload failed; the catalogue {folder} is complete, upload it again with "
            f"`python -m modeling_eclip.data.hub {folder} --push_to_hub {args.push_to_hub}`",
            file=sys.stderr,
        )
        raise
    print(f"pushed {folder} to {url}")


def run_build_command(
    build: Callable[[], Built],
    errors: tuple[type[Exception], ...],
    summary: Callable[[Built, float], str],
    push: tuple[str | os.PathLike, argparse.Namespace] | None = None,
    hub_api: Any = None,
    error_details: Callable[[Exception], str | None] | None = None,
) -> int:
    """The body of a command that builds a folder: ``build()``; on one of `errors`, ``error: ...`` on stderr (after
    ``error_details(error)`` where that gives text) and exit status 2; else ``summary(result, seconds)`` on stdout,
    then, with ``push = (folder, parsed arguments)``, :func:`push_from_arguments` (``hub_api``: as there)."""
    start = time.perf_counter()
    try:
        result = build()
    except errors as error:
        details = None if error_details is None else error_details(error)
        if details:
            print(details, file=sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(result, time.perf_counter() - start))
    if push is not None:
        push_from_arguments(*push, api=hub_api)
    return 0


def main(argv: Sequence[str] | None = None, hub_api: Any = None) -> int:
    """Push an existing catalogue folder; exit status 2 with a message when it is not a finished catalogue."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a catalogue folder (README.md, data/<split>-NNNNN-of-MMMMM.parquet)")
    add_push_arguments(parser)
    args = parser.parse_args(argv)
    if not args.push_to_hub:
        parser.error("--push_to_hub REPO_ID is required")
    try:
        push_from_arguments(args.folder, args, api=hub_api)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
