# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""`python -m modeling_eclip.training --config recipe-demo [--flag value ...]`: pretraining from the command line."""

from .loop import main

if __name__ == "__main__":
    main()
