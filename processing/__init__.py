# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Data preparation for ECLIP: the shared parquet shard format and the offline demo catalogue builder."""
