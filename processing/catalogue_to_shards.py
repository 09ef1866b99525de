# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Convert your product catalogue (JSONL, CSV or a saved dataset) into an ECLIP catalogue, a Hub dataset repository.

    python processing/catalogue_to_shards.py catalogue.jsonl --output data/shop --license cc-by-4.0

The converter is `modeling_eclip/data/convert.py` (`python -m modeling_eclip.data.convert` runs it without this
checkout); see its docstring or `--help` for the input format and options.
"""

import sys

from modeling_eclip.data.convert import main

if __name__ == "__main__":
    sys.exit(main())
