# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""One node of the multi-node test (`tests/test_scale.py`), started by `accelerate launch` with the shipped
multi-node config: joins the gloo group through Accelerate and saves rank 0's distributed result to argv[1]."""

import sys

import torch
from accelerate import PartialState
from helpers import distributed_result

state = PartialState(cpu=True)  # as the training loop does on a machine without an accelerator
result = distributed_result(state.process_index, state.num_processes)
if state.is_main_process:
    torch.save({**result, "world_size": torch.tensor(state.num_processes)}, sys.argv[1])
state.destroy_process_group()
