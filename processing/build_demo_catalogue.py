# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Build the offline demo product catalogue: `python -m modeling_eclip.demo.catalogue` as a script.

    python processing/build_demo_catalogue.py --output data/demo
    python processing/build_demo_catalogue.py --output data/demo-224 --image-size 224

The builder lives in the package (`modeling_eclip/demo/catalogue.py`), so an installed package builds the demo
catalogue without this checkout.
"""

import sys

from modeling_eclip.demo.catalogue import main

if __name__ == "__main__":
    sys.exit(main())
