# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Build the offline image-tower pretraining set: emoji that are not demo products, as an image-classification dataset
(`python -m modeling_eclip.demo.image_pretraining_set` as a script).

    python processing/build_image_pretraining_set.py --output data/emoji-pretraining
"""

import sys

from modeling_eclip.demo.image_pretraining_set import main

if __name__ == "__main__":
    sys.exit(main())
