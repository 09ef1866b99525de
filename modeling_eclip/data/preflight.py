# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The dataset pre-flight: a split's data files checked before any row is read, so that a broken dataset is refused
naming the file (and what to do) at start-up, before a model is built, rather than as a pyarrow or ``datasets``
error in the middle of an epoch.

:meth:`CatalogueSource.check_files <modeling_eclip.data.source.CatalogueSource.check_files>` runs it whenever a split
is opened (its schema check, the training start's ``check_catalogue``, evaluation). What it checks:

* every data-file pattern of a local dataset's card (``README.md``, ``configs``: the files a split is made of)
  matches a file: files deleted while the card still lists them;
* every local ``data_files`` pattern (``--dataset_data_files SPLIT=GLOB``) matches a file, each pattern on its own (one
  of two globs matching nothing would silently train on half the data);
* the split has data files;
* every local parquet file's footer can be read (``pyarrow.parquet.read_schema``: a few KB, no rows): a truncated or
  corrupt file; and every local parquet or CSV file (the CSV's header line) has the columns of the split's features (the
  card's, else the first file's): a stray file that does not belong to the split.

Remote files (Hub, object stores) are not opened here: that would cost a request per file. Their patterns are resolved
by ``datasets`` (a split left with no file is still refused here); a truncated or foreign remote file surfaces as
``datasets`` reads it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets.data_files import resolve_pattern, sanitize_patterns

from .shard_format import CARD_NAME, read_card_metadata


class DataFileError(ValueError):
    """A data file of a split cannot be read (truncated, not parquet) or holds other columns than the split."""


def is_remote(path: str) -> bool:
    """A URL (``hf://``, ``s3://``, ``https://``, ...) rather than a local path."""
    return "://" in path and not path.startswith("file://")


def check_card_data_files(root: Path, config: str | None) -> None:
    """Each data-file pattern that the card of the local dataset ``root`` gives the splits of ``config`` (None: the
    default configuration) matches a file. ``datasets`` would otherwise fail with "Couldn't infer the same data file
    format for all splits", or read a split without those files."""
    configs = read_card_metadata(root).get("configs") or []
    for entry in _chosen_configs(configs, config):
        for split, patterns in sanitize_patterns(entry.get("data_files") or []).items():
            for pattern in patterns:
                if not is_remote(pattern) and not _matches(pattern, root):
                    raise FileNotFoundError(
                        f"the card {root / CARD_NAME} lists {pattern} for the split {split!r} (configuration "
                        f"{entry.get('config_name', 'default')!r}) but it matches no file: the split's files were "
                        "deleted or moved. Restore them, or correct the card's `configs`"
                    )


def check_data_file_patterns(data_files: Mapping[str, str | Sequence[str]], base: Path | None) -> None:
    """Each local pattern of ``data_files`` (``{split: pattern or patterns}``, relative ones from ``base`` or the
    working directory, as ``datasets`` reads them) matches a file."""
    for split, patterns in data_files.items():
        for pattern in [patterns] if isinstance(patterns, str) else patterns:
            if not is_remote(str(pattern)) and not _matches(str(pattern), base):
                raise FileNotFoundError(
                    f"--dataset_data_files {split}={pattern} (data_files) matches no file; correct the path or glob"
                    + (f" (relative ones are read from {base})" if base else "")
                )


def check_split_files(files: Sequence[str], split: str, where: str, feature_names: Iterable[str] | None) -> None:
    """The data files of ``split`` exist, and the local parquet and CSV ones can be read and have the columns
    ``feature_names`` (None: those of the first of them). Raises ``FileNotFoundError`` or :class:`DataFileError`
    naming the file."""
    if not files:
        raise FileNotFoundError(f"the split {split!r} of dataset {where} has no data files")
    expected = None if feature_names is None else list(feature_names)
    first = "the split's features"
    for file in files:
        if is_remote(file):
            continue
        path = file.removeprefix("file://")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the data file {path} of the split {split!r} of dataset {where} is gone")
        names = _columns(path, split, where)
        if names is None:
            continue
        if expected is None:
            expected, first = names, f"its first file {path}"
        elif set(names) != set(expected):
            raise DataFileError(
                f"the data file {path} has the columns {names}, but the split {split!r} of dataset {where} has "
                f"{expected} ({first}): the file does not belong to the split. Move it out of the dataset's data "
                "folder, or name the split's files with --dataset_data_files"
            )


def _columns(path: str, split: str, where: str) -> list[str] | None:
    """The column names of a local data file from its parquet footer or CSV header; None for other formats."""
    if path.endswith(".parquet"):
        try:
            return pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as error:
            raise DataFileError(
                f"the data file {path} of the split {split!r} of dataset {where} is not a readable parquet file "
                f"(truncated or corrupt: {error}). Download or write it again, or remove it"
            ) from error
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as file:
            return next(csv.reader(file), [])
    return None


def _chosen_configs(configs: list[dict[str, Any]], config: str | None) -> list[dict[str, Any]]:
    """The card entries ``datasets`` reads for ``config``: the one of that name, else the default one."""
    if config is not None:
        return [entry for entry in configs if entry.get("config_name") == config]
    default = [entry for entry in configs if entry.get("default")]
    default = default or [entry for entry in configs if entry.get("config_name", "default") == "default"]
    return default or (configs if len(configs) == 1 else [])


def _matches(pattern: str, base: Path | None) -> bool:
    try:
        return bool(resolve_pattern(pattern, base_path=str(base) if base else ""))
    except FileNotFoundError:
        return False
