# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The README's Python snippets run as written (in order, sharing one namespace, like a reader's session)."""

import os
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def readme_snippets() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_snippets():
    assert len(readme_snippets()) >= 5


def test_readme_snippets_run(demo_catalogue, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    demo = demo_catalogue
    namespace: dict = {}
    for index, snippet in enumerate(readme_snippets()):
        code = snippet.replace("/tmp/", f"{tmp_path}{os.sep}").replace('"data/demo"', repr(str(demo)))
        try:
            exec(compile(code, f"README.md snippet {index}", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            pytest.fail(f"README snippet {index} failed: {error!r}\n{snippet}")
    assert tuple(namespace["heat"].shape) == (2, 8, 8)
    assert namespace["out"].loss.ndim == 0
    assert namespace["batch"]["product_ids"].unique().numel() == 8
