# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Product data for ECLIP. Tools, not remote code: nothing a checkpoint ships imports them.

- `shard_format.py`: the one definition of the catalogue shard format (parquet, one row per product);
- `stream.py`: the training stream of product pairs (two images of a product and its title), exactly resumable;
- `demo_products.py`, `demo_images.py`, `demo_catalogue.py`: the offline demo catalogue (emoji products drawn as
  catalog, customer and ad images with boxes); `python -m modeling_eclip.data.demo_catalogue --output data/demo`.
"""
