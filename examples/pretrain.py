# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Pretrain ECLIP with Accelerate (Sec. 3.3 objectives, Sec. 4.1 recipe).

With no arguments: the `eclip-tiny` preset (text tower from the offline all-MiniLM-L6 weights) on the catalogue in
`data/demo`, on CPU; `recipe-demo.yaml` builds the demo catalogue there on first use. Recipes live in `configuration/`
(`--config configuration/recipe-demo.yaml`); every field of `modeling_eclip.training_eclip.PretrainingArguments` is
also a flag and overrides the recipe.

    python examples/pretrain.py --config configuration/recipe-demo.yaml           # one process
    torchrun --nproc_per_node 2 examples/pretrain.py --config ...                 # N processes on one machine (CPU too)
    accelerate launch --config_file configuration/accelerate-multi-gpu.yaml examples/pretrain.py --config ...
    python examples/pretrain.py --config ... --resume latest                      # continue exactly after a stop
"""

import logging
import sys
from pathlib import Path

# Run as a script, this folder is first on the path, where examples/evaluate.py would shadow the `evaluate` library
# that the evaluation code imports: the repository root replaces it (only then; an importer's path stays as it is).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from modeling_eclip.training_eclip import parse_arguments, pretrain  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    args = parse_arguments(argv)
    result = pretrain(args)
    if result.export_dir is not None:
        print(f"exported the model after {result.step} steps to {result.export_dir}")
        for name, value in sorted(result.metrics.items()):
            print(f"  {name}: {value:.4f}")


if __name__ == "__main__":
    main()
