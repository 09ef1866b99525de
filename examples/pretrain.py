# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Pretrain ECLIP with Accelerate (Sec. 3.3 objectives, Sec. 4.1 recipe): `python -m modeling_eclip.training` as a
script, for launchers that take a file.

With no arguments: the `eclip-tiny` preset (text tower from the offline all-MiniLM-L6 weights) on the catalogue in
`data/demo`, on CPU; `recipe-demo.yaml` builds the demo catalogue there on first use. Recipes live in `configuration/`
(`--config configuration/recipe-demo.yaml`, or `--config recipe-demo` with an installed package); every field of
`modeling_eclip.training.PretrainingArguments` is also a flag and overrides the recipe.

    python examples/pretrain.py --config configuration/recipe-demo.yaml           # one process
    torchrun --nproc_per_node 2 examples/pretrain.py --config ...                 # N processes on one machine (CPU too)
    accelerate launch --config_file configuration/accelerate-multi-gpu.yaml examples/pretrain.py --config ...
    python examples/pretrain.py --config ... --resume latest                      # continue exactly after a stop
    python examples/pretrain.py --config ... --dataset_name org/shop-catalogue    # a Hub dataset, streamed
    python examples/pretrain.py --config ... --dataset_name org/photos --image_column image --product_id_column sku \
        --title_column name                                                       # one image per row, mapped columns
"""

from modeling_eclip.training import main

if __name__ == "__main__":
    main()
