# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Helpers of `tests/test_pretraining.py` that a spawned process must be able to import (module-level functions).

The two-process test (`run_distributed_worker`) must compute exactly what a single process computes on the
concatenated global batch. Two parts of `EclipForPreTraining.forward` draw from the torch RNG and depend on how the
batch is split over processes, so `make_deterministic` removes that dependence *without changing the maths*:

- ITM hard negatives (`sample_hard_negatives`, a multinomial draw): replaced by the arg-max of the same masked
  similarities (the "hardest" negative), so the sampled pairs are a function of the features only.
- Negative prompt selection (`_select_negative_queries`, random keys): with `num_queries - 1 >= global batch +
  queue_size`, *every* valid candidate is picked, so the set of negatives is fixed; only their order among slots
  1..T-1 is random. With the positive in slot 0 (`random_positive_slot=False`) and the position embeddings of slots
  1..T-1 set equal, the decoder is permutation-equivariant over those slots (slot attention, self-attention and the
  FFN have no other positional input), so every loss is independent of that order. The gradients of the individual
  position embeddings 1..T-1 still depend on it; their sum does not, and that is what the test compares.
- `image_prompt_probability=0.0` makes the `torch.rand` draw of the prompt modality irrelevant.
"""

import os

import torch
import torch.nn.functional as F
from conftest import TINY_IMAGE_SIZE as IMAGE_SIZE
from conftest import TINY_PROJECTION_DIM as PROJECTION_DIM
from conftest import tiny_config

from modeling_eclip import EclipConfig, loss_eclip
from modeling_eclip.modeling_eclip import EclipForPreTraining

VOCAB_SIZE = 100
SEQ_LEN = 12


def tiny_pretraining_config(**overrides) -> EclipConfig:
    """The suite's tiny config (conftest) with a 100-word vocabulary, so random token ids stay cheap, and a
    16-entry queue; dropout 0 everywhere."""
    text = {"vocab_size": VOCAB_SIZE, "max_position_embeddings": 32, **(overrides.pop("text_config", {}) or {})}
    return tiny_config(text_config=text, **{"queue_size": 16, **overrides})


def make_batch(product_ids, seed: int = 0, noise: float = 0.5) -> dict:
    """A fixed batch: random images, positives = image + `noise` * N(0, 1), random token ids, the given product ids."""
    product_ids = torch.as_tensor(product_ids, dtype=torch.long)
    batch_size = product_ids.shape[0]
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    positive_pixel_values = pixel_values + noise * torch.randn(pixel_values.shape, generator=generator)
    input_ids = torch.randint(1, VOCAB_SIZE, (batch_size, SEQ_LEN), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::2, -3:] = 0  # some padding, so the mask is exercised
    return {
        "pixel_values": pixel_values,
        "positive_pixel_values": positive_pixel_values,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "product_ids": product_ids,
    }


def slice_batch(batch: dict, rows: slice) -> dict:
    return {name: value[rows] for name, value in batch.items()}


@torch.no_grad()
def argmax_hard_negatives(similarity, row_product_ids, column_product_ids, generator=None):
    """Deterministic stand-in for `sample_hard_negatives`: the most similar column of another product."""
    allowed = row_product_ids[:, None] != column_product_ids[None, :]
    return similarity.float().masked_fill(~allowed, float("-inf")).argmax(dim=1)


# ----- the distributed-equivalence setting -----

DIST_GLOBAL_BATCH = 8
DIST_QUEUE_SIZE = 16
# Product 3 appears twice, once on each process (rows 3 and 6), so cross-process same-product masking is exercised.
DIST_PRODUCT_IDS = [10, 11, 12, 3, 14, 15, 3, 17]
# Queue entries: other products, the batch's own products (must be masked) and empty slots (-1, must be skipped).
DIST_QUEUE_PRODUCT_IDS = [50, 51, 3, 52, 10, -1, 53, 17, 54, 55, -1, 56, 14, 57, 58, -1]


def make_deterministic(model: EclipForPreTraining) -> None:
    """See the module docstring: equal position embeddings for the negative slots (then resync the momentum copy)."""
    with torch.no_grad():
        positions = model.eclip.query_position_embeddings.weight
        positions[1:] = positions[1].clone()
    model.copy_online_to_momentum()


def build_distributed_model(seed: int = 0) -> EclipForPreTraining:
    """The model of the distributed test: T - 1 >= global batch + queue, so every valid candidate is a negative."""
    config = tiny_pretraining_config(
        queue_size=DIST_QUEUE_SIZE,
        random_positive_slot=False,
        image_prompt_probability=0.0,
        decoder_config={"num_queries": DIST_GLOBAL_BATCH + DIST_QUEUE_SIZE},
    )
    torch.manual_seed(seed)
    model = EclipForPreTraining(config).train()
    make_deterministic(model)
    # A pre-filled queue, so L_inter also contrasts (and masks) queue entries.
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        shape = (DIST_QUEUE_SIZE, PROJECTION_DIM)
        model.queue_embeds.copy_(F.normalize(torch.randn(shape, generator=generator), dim=-1))
        model.queue_prompts.copy_(F.normalize(torch.randn(shape, generator=generator), dim=-1))
        model.queue_product_ids.copy_(torch.tensor(DIST_QUEUE_PRODUCT_IDS))
    return model


def loss_and_gradients(model: EclipForPreTraining, batch: dict) -> dict:
    """One forward + backward, then the enqueue of a good step; returns the losses, every trainable parameter's
    gradient and the queues (detached copies)."""
    output = model(**batch)
    output.loss.backward()
    model.enqueue(output)
    result = {f"loss/{name}": output[name].detach().clone() for name in LOSS_NAMES}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            result[f"grad/{name}"] = parameter.grad.detach().clone()
    for name in ("queue_embeds", "queue_prompts", "queue_product_ids", "queue_pointer"):
        result[f"buffer/{name}"] = getattr(model, name).detach().clone()
    return result


LOSS_NAMES = ("loss", "loss_itc", "loss_inter", "loss_itm", "loss_intra", "loss_entropy")


def run_distributed_worker(rank: int, world_size: int, rendezvous_file: str, out_path: str) -> None:
    """Spawned by the test: one process of a 2-process gloo group; rank 0 saves the DDP-averaged result."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    loss_eclip.sample_hard_negatives = argmax_hard_negatives
    # A file rendezvous: a free TCP port picked by the test could be taken by a parallel test before the group binds it.
    store = torch.distributed.FileStore(rendezvous_file, world_size)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size, store=store)
    try:
        model = build_distributed_model()
        batch = make_batch(DIST_PRODUCT_IDS, seed=3)
        local = DIST_GLOBAL_BATCH // world_size
        result = loss_and_gradients(model, slice_batch(batch, slice(rank * local, (rank + 1) * local)))
        # What DDP does: average the gradients (and, for logging, the losses) over processes.
        for name, value in result.items():
            if name.startswith(("grad/", "loss/")):
                torch.distributed.all_reduce(value)
                value /= world_size
        if rank == 0:
            torch.save(result, out_path)
    finally:
        torch.distributed.destroy_process_group()
