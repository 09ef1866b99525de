# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Convert a catalogue of the old shard format 1 into the Hub dataset layout (format 2).

    python processing/migrate_shards.py data/shop-v1 --output data/shop --license cc-by-4.0

The migration is `modeling_eclip/data/migrate.py` (`python -m modeling_eclip.data.migrate`).
"""

import sys

from modeling_eclip.data.migrate import main

if __name__ == "__main__":
    sys.exit(main())
