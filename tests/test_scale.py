# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The shipped launch configs: two "nodes" on this machine through `configuration/accelerate-multi-node.yaml`, and
the FSDP config refusing to run unsharded on CPU."""

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    DIST_PRODUCT_IDS,
    REPO,
    assert_matches_one_process,
    assert_same_training_result,
    fsdp_step_result,
    make_batch,
    subprocess_env,
    tiny_run_arguments,
    write_tiny_model_config,
)

# Every test here launches processes (accelerate, torchrun): `make test-quick` leaves them out.
pytestmark = pytest.mark.slow

MULTI_NODE_CONFIG = REPO / "configuration" / "accelerate-multi-node.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_nodes_match_one_process_on_the_global_batch(tmp_path: Path) -> None:
    """Two `accelerate launch` invocations with the multi-node config, one process per node (`--machine_rank` 0 and
    1, a static rendezvous on 127.0.0.1, gloo): the same losses, gradients and queues as one process on the global
    batch (the determinism of `helpers.distributed_result`)."""
    output = tmp_path / "rank0.pt"
    port = str(free_port())
    environment = {**subprocess_env(), "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    with contextlib.ExitStack() as stack:
        nodes = []
        for machine_rank in (0, 1):
            # A file, not a pipe: nothing blocks on a full pipe.
            log = stack.enter_context(open(tmp_path / f"node{machine_rank}.log", "w"))
            command = [
                sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", str(MULTI_NODE_CONFIG),
                "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(machine_rank),
                "--main_process_ip", "127.0.0.1", "--main_process_port", port,
                "--mixed_precision", "no", "--num_cpu_threads_per_process", "1",
                str(REPO / "tests" / "multi_node_worker.py"), str(output),
            ]  # fmt: skip
            process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(process.kill)
            nodes.append(process)
        for process in nodes:
            process.wait(timeout=240)
    logs = "".join((tmp_path / f"node{rank}.log").read_text() for rank in (0, 1))
    assert all(process.returncode == 0 for process in nodes), logs
    distributed = torch.load(output)
    assert int(distributed.pop("world_size")) == 2
    assert_matches_one_process(distributed, "2 nodes x 1 process")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_fsdp2_sharded_training_step_matches_one_process(tmp_path: Path) -> None:
    """FSDP2 (`fully_shard` per ViT, BERT and decoder block and at the root, as `accelerate-fsdp.yaml` wraps) on 2 gloo
    processes: the losses, the reduce-scattered gradients, the weights after an optimiser step, the EMA momentum model
    updated shard by shard and the queues, gathered as the full state dict an export writes, equal one unsharded
    process on the global batch."""
    output = tmp_path / "rank0.pt"
    environment = {**subprocess_env(), "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests" / "fsdp_worker.py"), str(output),
    ]  # fmt: skip
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    sharded = torch.load(output)
    single = fsdp_step_result(make_batch(DIST_PRODUCT_IDS, seed=3), shard=False)
    assert any(key.startswith("state/momentum_eclip.") for key in single)
    assert_same_training_result(single, sharded, "FSDP2, 2 processes")


def test_the_fsdp_config_on_cpu_refuses_instead_of_training_unsharded(demo_catalogue: Path, tmp_path: Path) -> None:
    """Accelerate sets up FSDP only over GPU-type devices: launched on CPU, the FSDP config would otherwise train
    2-process DDP without a word."""
    config = write_tiny_model_config(tmp_path / "tiny.json")
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "configuration" / "accelerate-fsdp.yaml"),
        "--num_processes", "2", "--mixed_precision", "no", "--num_cpu_threads_per_process", "1",
        str(REPO / "examples" / "pretrain.py"),
        *tiny_run_arguments(config, demo_catalogue, tmp_path / "out", max_steps=3),
    ]  # fmt: skip
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "asks for FSDP" in output and "would not be sharded" in output, output[-3000:]
    assert not (tmp_path / "out" / "model").exists()
