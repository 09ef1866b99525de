# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""`python -m modeling_eclip.detection`: evaluate detection checkpoints (Table 4, right)."""

from .evaluate import main

if __name__ == "__main__":
    main()
