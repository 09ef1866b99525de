# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The README as a reader uses it: its Python snippets run as written (in order, sharing one namespace, like a reader's
session), and every command it shows names a script, module, file and make target that exist, with flags and values
that the script's own parser accepts."""

import argparse
import importlib.util
import itertools
import logging
import os
import pathlib
import re
import runpy
import shlex
import sys
import warnings

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PYTHONS = ("python", "python3", ".venv/bin/python")
LAUNCHERS = ("accelerate", "torchrun")  # their own flags come before the script
REPO_PATH = re.compile(r"^(configuration|examples|processing|modeling_eclip)/\S+\.\w+$")


def readme_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def readme_commands() -> list[list[str]]:
    """The README's commands as argument lists: the lines of its bash blocks (continuations joined, comments dropped)
    and the inline code spans of its prose that start with python, accelerate, torchrun or make."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL):
        lines += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", README, flags=re.DOTALL)
    lines += re.findall(r"`((?:python3? |\.venv/bin/python |accelerate |torchrun |make )[^`]*)`", prose)
    commands = [shlex.split(line, comments=True) for line in lines]
    return [command for command in commands if command]


def python_commands() -> list[tuple[str, list[str]]]:
    """(module or script path, arguments) of every command that runs a module of the package or a repository script."""
    found = []
    for command in readme_commands():
        # `python3 -m venv .venv && .venv/bin/pip install torch`: each command of a chain on its own
        for chained, words in itertools.groupby(command, key=lambda word: word == "&&"):
            words = list(words)
            if chained:
                continue
            if words[0] in LAUNCHERS:
                script = next((i for i, word in enumerate(words) if word.endswith(".py")), None)
                if script is not None:
                    found.append((words[script], words[script + 1 :]))
            elif words[0] in PYTHONS and len(words) > 1:
                if words[1] == "-m" and len(words) > 2 and words[2].startswith("modeling_eclip"):
                    found.append((words[2], words[3:]))
                elif words[1].endswith(".py"):
                    found.append((words[1], words[2:]))
    return found


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def command_parser(target: str, arguments: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser `target` builds when run as the README runs it: the script or module is run as __main__ and stopped
    at its first parse (pretraining and fine-tuning parse the recipe's path first, with the full parser)."""

    def stop(parser: argparse.ArgumentParser, args: object = None, namespace: object = None) -> None:
        raise _Parsed(parser)

    root_handlers, root_level = logging.root.handlers[:], logging.root.level  # training's main calls basicConfig
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", stop)
        patch.setattr(sys, "argv", [target, *arguments])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is imported already
                if target.endswith(".py"):
                    patch.syspath_prepend(str((REPO / target).parent))
                    runpy.run_path(str(REPO / target), run_name="__main__")
                else:
                    runpy.run_module(target, run_name="__main__", alter_sys=True)
        except _Parsed as parsed:
            return parsed.parser
        finally:
            logging.root.handlers[:] = root_handlers
            logging.root.setLevel(root_level)
    pytest.fail(f"{target} {' '.join(arguments)} never parsed its command line")


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


def test_readme_commands_name_scripts_and_flags_their_parsers_take(monkeypatch, capsys):
    commands = python_commands()
    # The sections the README must keep showing: building data, training, evaluation, detection, serving.
    targets = {target for target, _ in commands}
    assert {"modeling_eclip.demo.catalogue", "modeling_eclip.training", "examples/pretrain.py"} <= targets
    assert {"examples/evaluate_eclip.py", "examples/finetune_detection.py", "examples/export_onnx.py"} <= targets
    problems = []
    for target, arguments in commands:
        shown = f"{target} {shlex.join(arguments)}"
        if target.endswith(".py") and not (REPO / target).is_file():
            problems.append(f"{shown}: no file {target}")
            continue
        if not target.endswith(".py") and importlib.util.find_spec(target) is None:
            problems.append(f"{shown}: no module {target}")
            continue
        if not arguments:  # the prose naming a module or script (`python -m modeling_eclip.data.convert`)
            continue
        parser = command_parser(target, arguments, monkeypatch)
        try:
            _, unknown = parser.parse_known_args(arguments)  # the real one again: the patch is undone
        except SystemExit:
            problems.append(f"{shown}: {capsys.readouterr().err.strip().splitlines()[-1]}")
            continue
        if unknown:
            problems.append(f"{shown}: {parser.prog} does not take {unknown}")
    assert not problems, "\n".join(problems)


def test_readme_paths_and_make_targets_exist():
    commands = readme_commands()
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), flags=re.MULTILINE).group(1).split()
    targets = [word for command in commands if command[0] == "make" for word in command[1:] if "=" not in word]
    assert targets and set(targets) <= set(phony), set(targets) - set(phony)
    paths = {word for command in commands for word in command if REPO_PATH.match(word)}
    assert paths and all((REPO / path).is_file() for path in paths), sorted(p for p in paths if not (REPO / p).exists())
