# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Model presets (`eclip-*.json`), training recipes (`recipe-*.yaml`), Accelerate launch configs (`accelerate-*.yaml`).

This folder is where users find them, and it is also the package `modeling_eclip.presets` (setup.cfg maps that package
here and ships its JSON and YAML files as package data), so an installed package finds every preset and recipe by
name with `importlib.resources`, without this checkout. The file holds no code.
"""
