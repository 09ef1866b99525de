# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""One process of the FSDP2 test (`tests/test_scale.py`), started by torchrun: the distributed-equivalence model
sharded with `fully_shard` per transformer block, as `configuration/accelerate-fsdp.yaml` wraps it; one training step
(forward, backward, optimiser step, enqueue, momentum update); rank 0 saves what it saw, with full tensors."""

import sys

import torch
import torch.distributed as dist
from helpers import DIST_GLOBAL_BATCH, DIST_PRODUCT_IDS, fsdp_step_result, make_batch, slice_batch

dist.init_process_group("gloo")
try:
    rank, world_size = dist.get_rank(), dist.get_world_size()
    local = DIST_GLOBAL_BATCH // world_size
    batch = slice_batch(make_batch(DIST_PRODUCT_IDS, seed=3), slice(rank * local, (rank + 1) * local))
    result = fsdp_step_result(batch, shard=True)
    if rank == 0:
        torch.save(result, sys.argv[1])
finally:
    dist.destroy_process_group()
