# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The product-data contract every user's data goes through. Tools, not remote code: nothing a checkpoint ships
imports them.

- `shard_format.py`: the catalogue format, a Hugging Face dataset repository as is (parquet, one row per product);
- `source.py`: read any dataset (Hub id or folder, product- or image-per-row, column mapping) as products;
- `arguments.py`: `DatasetArguments`, the command-line options naming a dataset and its columns;
- `convert.py`: your catalogue (JSONL, CSV, a saved dataset) -> that format (`python -m modeling_eclip.data.convert`);
- `migrate.py`: old format-1 shards -> format 2 (`python -m modeling_eclip.data.migrate`);
- `stream.py`: the training stream of product pairs (two images of a product and its title), exactly resumable
  (`batching.py`: its decode processes and its batcher);
- `hub.py`: push a finished catalogue folder to a Hub dataset repository; `output_folder.py`: safe output folders.

The offline demo data (emoji products and the image-tower set) is built by `modeling_eclip.demo`.
"""
