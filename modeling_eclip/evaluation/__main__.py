# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""`python -m modeling_eclip.evaluation --model DIR --data DIR`: the paper's Tables 1-4 for an exported checkpoint."""

from .cli import main

if __name__ == "__main__":
    main()
