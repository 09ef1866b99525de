# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Data preparation scripts: your catalogue -> shards (`catalogue_to_shards.py`) and the demo catalogue builder's
command line (`build_demo_catalogue.py`; the builder is `modeling_eclip.data.demo_catalogue`)."""
