# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Reliability of the product data that training and evaluation read (issue 28): image files have a size cap and only
regular files are read."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import bad_inputs
import datasets
import pytest

from modeling_eclip import processing_eclip
from modeling_eclip.processing_eclip import to_rgb_image


@pytest.fixture(autouse=True)
def _no_stream_shutdown_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


# ------------------------------------------------------------------------------------------ image file sizes
def padded_png(extra: int) -> bytes:
    """A valid PNG followed by ``extra`` bytes (decoders stop at its end, so the file decodes at any size)."""
    return bad_inputs.valid_png(0) + b"\0" * extra


def test_an_image_file_over_the_cap_is_refused_naming_the_file_and_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(padded_png(10_000))
    monkeypatch.setattr(processing_eclip, "MAX_IMAGE_FILE_BYTES", 8_000)
    with pytest.raises(ValueError, match=rf"{path}.*bytes, over the cap of 8000 .*MAX_IMAGE_FILE_BYTES"):
        to_rgb_image(str(path), "images[0]")
    assert to_rgb_image(str(path), max_file_bytes=20_000).size == (24, 24)
    with pytest.raises(ValueError, match="over the cap of 100"):
        to_rgb_image(str(path), max_file_bytes=100)


def test_a_fifo_or_a_folder_is_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("the decoder waited on a FIFO")))
    signal.alarm(10)
    try:
        with pytest.raises(ValueError, match="not a regular file"):
            to_rgb_image(str(fifo))
    finally:
        signal.alarm(0)
    with pytest.raises(ValueError, match="a folder, not an image file"):
        to_rgb_image(str(tmp_path / "folder.png"))
    with pytest.raises(ValueError, match="empty"):
        to_rgb_image(str(tmp_path / "empty.png"))
