# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The house rules of the package, read from the source with `ast` (nothing is imported): remote code imports no tool,
tools import only lower layers, no module cycle, thin entry points, files of a readable size."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "modeling_eclip"

# Layer of each tool subpackage; an import may only go to a lower layer (or stay inside its own subpackage). The flat
# remote-code files are layer 0: they import no subpackage at all.
LAYERS = {"data": 1, "demo": 2, "evaluation": 2, "serving": 2, "training": 3, "detection": 4}
MAX_LINES = 600
LONGER_ALLOWED = {"modeling_eclip/modeling_eclip.py"}  # the model file, as in transformers
MAX_ENTRY_POINT_LINES = 40
# Imports after code hide the order a module needs; the project keeps none (written so it cannot match itself).
NOQA_E402 = re.compile(r"#\s*noqa:.*\bE402")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module of ours `path` imports, at any depth of the file (imports inside functions count too: a cycle
    dodged by a late import is still a cycle)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update(name for name in [target, *names] if name.startswith("modeling_eclip"))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("modeling_eclip"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    # A package's __init__ re-exports its modules; a module importing its own package (or a package's name) is no edge.
    return {
        name: {target for target in _imports(path) if target in modules and not name.startswith(target)}
        for name, path in modules.items()
    }


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1], LAYERS[parts[1]]
    return "remote code", 0


def test_every_tool_subpackage_has_a_layer() -> None:
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")} - {"presets"}
    assert subpackages == set(LAYERS)


def test_imports_only_go_down_the_layers() -> None:
    upward = []
    for module, targets in _graph().items():
        room, layer = _layer(module)
        for target in targets:
            target_room, target_layer = _layer(target)
            if target_room != room and target_layer >= layer and target != "modeling_eclip":
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a lower layer to a higher one (or across one layer): " + ", ".join(upward)


def test_no_module_imports_itself_through_a_cycle() -> None:
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_the_data_contract_holds_no_demo_code() -> None:
    data = PACKAGE / "data"
    assert not [path.name for path in data.glob("*.py") if "demo" in path.name]
    assert not [str(path) for path in data.glob("*.py") if any(".demo" in name for name in _imports(path))]


def test_no_import_after_code() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in REPO.rglob("*.py")
        if ".venv" not in path.parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if NOQA_E402.search(line)
    ]
    assert not offenders


@pytest.mark.parametrize("path", sorted(REPO.glob("processing/*.py")), ids=lambda path: path.name)
def test_processing_scripts_are_thin_entry_points(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) < MAX_ENTRY_POINT_LINES


def test_no_source_file_outgrows_a_readable_size() -> None:
    sources = [*PACKAGE.rglob("*.py"), *REPO.glob("examples/*.py"), *REPO.glob("processing/*.py")]
    too_long = {
        str(path.relative_to(REPO)): length
        for path in sources
        if (length := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and str(path.relative_to(REPO)) not in LONGER_ALLOWED
    }
    assert not too_long
