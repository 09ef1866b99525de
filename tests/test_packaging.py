# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""setup.cfg declares what the package imports, with floors that match what the code calls."""

import ast
import configparser
import importlib.metadata
import re
import sys

from helpers import REPO
from packaging.requirements import Requirement
from packaging.version import Version


def _requirements() -> dict[str, Requirement]:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    lines = setup["options"]["install_requires"].splitlines()
    for extra in setup["options.extras_require"].values():
        lines += extra.splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.strip().startswith("#")]
    return {re.sub(r"[-_.]+", "-", r.name).lower(): r for r in requirements}


def _imported_modules() -> set[str]:
    names = set()
    for path in (REPO / "modeling_eclip").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"modeling_eclip", "__future__"}


def test_every_third_party_import_is_declared():
    declared = _requirements()
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(_imported_modules()):
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(module, [module])}
        if not names & set(declared):
            missing[module] = sorted(names)
    assert not missing, f"imported but not declared in setup.cfg: {missing}"


def test_torch_floor_has_what_the_code_calls():
    uses_accelerator_api = any(
        "torch.accelerator." in path.read_text() for path in (REPO / "modeling_eclip").rglob("*.py")
    )
    floors = [Version(spec.version) for spec in _requirements()["torch"].specifier if spec.operator == ">="]
    assert floors, "torch needs a floor"
    if uses_accelerator_api:
        assert max(floors) >= Version("2.6"), "torch.accelerator needs torch >= 2.6"
