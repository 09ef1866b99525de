# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Compare the product-pair pipeline's throughput with the training step's, on the tiny preset (CPU).

Samples/s of the loader (two images + text per sample, processor at the preset's 128 px) next to samples/s of an
``EclipForPreTraining`` step (random init, bf16 autocast, AdamW) measured in the same run; the pipeline should be at
least 3x faster so that it never starves training. The loader runs as a ``torch.utils.data.DataLoader`` over the
stream with ``--num-workers`` loader workers (default 2)::

    .venv/bin/python examples/benchmark_data.py --data data/demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from modeling_eclip import EclipConfig, EclipForPreTraining, EclipProcessor
from modeling_eclip.data import demo_catalogue
from modeling_eclip.data.shard_format import list_shards
from modeling_eclip.data.stream import ProductPairStream, load_product_stream
from modeling_eclip.training.arguments import read_model_config
from modeling_eclip.training.builders import build_processor


def loader_batches(data: Path, processor: EclipProcessor, batch_size: int, num_workers: int, epoch: int = 0):
    """An endless iterator of batches (epoch after epoch) through a DataLoader over the stream."""
    stream = ProductPairStream(load_product_stream(data_dir=data, seed=0), processor, batch_size, num_workers=0)
    while True:
        stream.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers)
        yield from loader
        epoch += 1


def measure_loader(data: Path, processor: EclipProcessor, batch_size: int, num_workers: int, batches: int) -> float:
    """Samples/s of the pipeline over ``batches`` batches, after one warm-up batch (worker start-up excluded)."""
    iterator = loader_batches(data, processor, batch_size, num_workers)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def measure_step(config: EclipConfig, batch: dict, steps: int) -> float:
    """Samples/s of forward + backward + AdamW on one fixed batch, after one warm-up step."""
    torch.manual_seed(0)
    model = EclipForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(**batch)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.enqueue(output)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch["pixel_values"].shape[0] / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo"), help="catalogue (built if missing)")
    parser.add_argument("--config", default="eclip-tiny", help="a shipped preset (configuration/) or a config JSON")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (default 5)")
    parser.add_argument("--loader-batches", type=int, default=20, help="timed loader batches (default 20)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers over the stream (default 2)")
    args = parser.parse_args(argv)

    if not list_shards(args.data, "train"):
        print(f"building the demo catalogue into {args.data} ...", file=sys.stderr)
        demo_catalogue.build_catalogue(args.data)
    config = EclipConfig(**read_model_config(args.config))
    processor = build_processor(config.vision_config.image_size)

    loader = measure_loader(args.data, processor, args.batch_size, args.num_workers, args.loader_batches)
    batch = next(loader_batches(args.data, processor, args.batch_size, 0))
    step = measure_step(config, batch, args.steps)
    print(f"| measure (tiny preset, {config.vision_config.image_size} px, batch {args.batch_size}) | samples/s |")
    print("| --- | ---: |")
    print(f"| product-pair pipeline ({args.num_workers} DataLoader workers) | {loader:.1f} |")
    print(f"| EclipForPreTraining step (bf16 autocast, AdamW) | {step:.1f} |")
    print(f"| ratio pipeline / step (target >= 3) | {loader / step:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
