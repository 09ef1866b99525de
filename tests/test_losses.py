# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of `modeling_eclip/loss_eclip.py` against naive loop references written from Eq. 6-10."""

import copy
import inspect
import math
import os
import tempfile

import pytest
import torch
import torch.nn.functional as F

from modeling_eclip.loss_eclip import (
    assignment_entropy_regularizer,
    distributed_rank_and_world_size,
    gather_features,
    image_text_contrastive_loss,
    instance_text_matching_loss,
    inter_product_contrastive_loss,
    intra_product_contrastive_loss,
    sample_hard_negatives,
    slot_token_entropy,
)

B, T, D, N, K = 4, 5, 8, 6, 7
SCALE = 7.0
ATOL = 1e-5


def _normalized(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator), dim=-1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(x) * float(y) for x, y in zip(a.tolist(), b.tolist()))


def _entropy_loss(assignment: torch.Tensor, positive_index: torch.Tensor) -> torch.Tensor:
    return assignment_entropy_regularizer(
        slot_entropy=slot_token_entropy(assignment), positive_slot=positive_index, num_tokens=assignment.shape[1]
    )


def _one_process_itc(images, texts, scale, product_ids) -> torch.Tensor:
    """L_itc in one process: the local rows are the whole (gathered) batch."""
    return image_text_contrastive_loss(
        image_embeds=images,
        text_embeds=texts,
        all_image_embeds=images,
        all_text_embeds=texts,
        logit_scale=scale,
        product_ids=product_ids,
        all_product_ids=product_ids,
    )


def _one_process_inter(instances, momentum, scale, product_ids, queue, queue_product_ids) -> torch.Tensor:
    """L_inter in one process: the local rows are the whole (gathered) batch."""
    return inter_product_contrastive_loss(
        instance_embeds=instances,
        all_momentum_embeds=momentum,
        logit_scale=scale,
        product_ids=product_ids,
        all_product_ids=product_ids,
        queue_embeds=queue,
        queue_product_ids=queue_product_ids,
    )


def _one_process_itm(head, instances, images, texts, product_ids) -> torch.Tensor:
    """L_itm in one process: the local rows are the whole (gathered) batch."""
    return instance_text_matching_loss(
        itm_head=head,
        instance_embeds=instances,
        image_embeds=images,
        text_embeds=texts,
        all_image_embeds=images,
        all_text_embeds=texts,
        product_ids=product_ids,
        all_product_ids=product_ids,
    )


def _itm_head(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(D, 2)


def _log_softmax_at(logits: list[float], target: int) -> float:
    top = max(logits)
    return logits[target] - top - math.log(sum(math.exp(v - top) for v in logits))


# ----------------------------------------------------------------------------------------------------------
# Naive references, written from the equations with Python loops (float64 arithmetic)
# ----------------------------------------------------------------------------------------------------------


def reference_itc(images, texts, scale, product_ids) -> float:
    """Eq. 6-7, mean over rows; a column of the row's product (other than the row itself) is skipped."""

    def one_direction(queries, keys) -> float:
        total = 0.0
        for i in range(len(queries)):
            columns = [j for j in range(len(keys)) if j == i or product_ids[j] != product_ids[i]]
            logits = [scale * _dot(queries[i], keys[j]) for j in columns]
            total -= _log_softmax_at(logits, columns.index(i))
        return total / len(queries)

    return 0.5 * (one_direction(images, texts) + one_direction(texts, images))


def reference_inter(instances, momentum, queue, product_ids, queue_product_ids, scale) -> float:
    """Eq. 8, mean over rows: positive h_xi^i, negatives = other-product batch entries and queue entries."""
    total = 0.0
    for i in range(len(instances)):
        positive = scale * _dot(instances[i], momentum[i])
        negatives = [
            scale * _dot(instances[i], momentum[k]) for k in range(len(momentum)) if product_ids[k] != product_ids[i]
        ]
        negatives += [
            scale * _dot(instances[i], queue[k]) for k in range(len(queue)) if queue_product_ids[k] != product_ids[i]
        ]
        total -= positive - math.log(math.exp(positive) + sum(math.exp(v) for v in negatives))
    return total / len(instances)


def reference_itm(logits, labels) -> float:
    return -sum(_log_softmax_at(logits[n].tolist(), int(labels[n])) for n in range(len(labels))) / len(labels)


def reference_intra(slots, texts, positive_index, scale) -> float:
    """Eq. 9, mean over the batch, slots L2-normalised first."""
    total = 0.0
    for i in range(slots.shape[0]):
        logits = []
        for t in range(slots.shape[1]):
            norm = math.sqrt(_dot(slots[i, t], slots[i, t]))
            logits.append(scale * _dot(slots[i, t], texts[i]) / norm)
        total -= _log_softmax_at(logits, int(positive_index[i]))
    return total / slots.shape[0]


def reference_entropy(assignment, positive_index) -> float:
    """Eq. 10, mean over the batch, each slot's column normalised over the N tokens first."""
    batch, tokens, slots = assignment.shape
    total = 0.0
    for b in range(batch):
        for t in range(slots):
            column = [float(assignment[b, i, t]) for i in range(tokens)]
            column = [v / sum(column) for v in column]
            entropy = sum(p * math.log(1.0 / p) for p in column if p > 0)
            total += entropy if t == int(positive_index[b]) else math.log(tokens) - entropy
    return total / batch


@pytest.mark.parametrize(
    "loss",
    [
        image_text_contrastive_loss,
        inter_product_contrastive_loss,
        instance_text_matching_loss,
        intra_product_contrastive_loss,
        assignment_entropy_regularizer,
    ],
)
def test_losses_take_keyword_arguments_only(loss):
    """Several arguments are tensors of one shape (local and gathered embeddings): positional calls could swap them."""
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in inspect.signature(loss).parameters.values())


# ----------------------------------------------------------------------------------------------------------
# Image-text contrastive (Eq. 6-7)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("product_ids", [[0, 1, 2, 3], [0, 1, 0, 2], [5, 5, 5, 1]])
def test_itc_matches_reference(product_ids):
    images, texts = _normalized(B, D, seed=0), _normalized(B, D, seed=1)
    pids = torch.tensor(product_ids)
    loss = _one_process_itc(images, texts, torch.tensor(SCALE), pids)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_itc(images, texts, SCALE, product_ids), abs=ATOL)


def test_itc_without_product_ids_is_plain_clip_loss():
    images, texts = _normalized(B, D, seed=0), _normalized(B, D, seed=1)
    logits = SCALE * images @ texts.t()
    labels = torch.arange(B)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    loss = _one_process_itc(images, texts, torch.tensor(SCALE), None)
    torch.testing.assert_close(loss, expected, atol=ATOL, rtol=0)
    # With duplicates, masking must change the value (otherwise the masked tests below prove nothing).
    pids = torch.tensor([0, 1, 0, 2])
    masked = _one_process_itc(images, texts, torch.tensor(SCALE), pids)
    assert abs(masked.item() - loss.item()) > 1e-3


def test_itc_same_product_column_is_not_a_negative():
    # Local row 0 (global row 2) shares product 7 with global row 0: row 0's image and text are masked
    # for it in both directions, so changing them leaves the loss of that local row unchanged.
    images, texts = _normalized(B, D, seed=0), _normalized(B, D, seed=1)
    pids = torch.tensor([7, 1, 7, 2])
    scale = torch.tensor(SCALE)

    def local_loss(all_images, all_texts):
        return image_text_contrastive_loss(
            image_embeds=all_images[2:3],
            text_embeds=all_texts[2:3],
            all_image_embeds=all_images,
            all_text_embeds=all_texts,
            logit_scale=scale,
            product_ids=pids[2:3],
            all_product_ids=pids,
            row_offset=2,
        )

    base = local_loss(images, texts)
    changed_images, changed_texts = images.clone(), texts.clone()
    changed_images[0], changed_texts[0] = images[2], texts[2]  # a same-product "negative" as hard as possible
    torch.testing.assert_close(local_loss(changed_images, changed_texts), base, atol=ATOL, rtol=0)
    # Changing an other-product column does change it.
    changed_images, changed_texts = images.clone(), texts.clone()
    changed_images[1], changed_texts[1] = images[2], texts[2]
    assert local_loss(changed_images, changed_texts).item() > base.item() + 1e-3


def _split_over_ranks(loss_fn, world_size: int, batch: int):
    """Mean of the per-rank losses, each rank seeing its local rows vs the global columns."""
    local = batch // world_size
    losses = [loss_fn(slice(r * local, (r + 1) * local), r * local) for r in range(world_size)]
    return torch.stack(losses).mean()


def test_itc_two_ranks_equal_single_process_loss_and_gradients():
    batch = 6
    pids = torch.tensor([0, 1, 2, 0, 3, 1])  # duplicates across the two "ranks"
    images = _normalized(batch, D, seed=2).requires_grad_()
    texts = _normalized(batch, D, seed=3).requires_grad_()
    scale = torch.tensor(SCALE, requires_grad=True)
    inputs = (images, texts, scale)

    full = _one_process_itc(images, texts, scale, pids)
    full_grads = torch.autograd.grad(full, inputs)

    def rank_loss(rows, offset):
        return image_text_contrastive_loss(
            image_embeds=images[rows],
            text_embeds=texts[rows],
            all_image_embeds=images,
            all_text_embeds=texts,
            logit_scale=scale,
            product_ids=pids[rows],
            all_product_ids=pids,
            row_offset=offset,
        )

    split = _split_over_ranks(rank_loss, world_size=2, batch=batch)
    split_grads = torch.autograd.grad(split, inputs)
    torch.testing.assert_close(split, full, atol=ATOL, rtol=0)
    assert full.item() == pytest.approx(reference_itc(images.detach(), texts.detach(), SCALE, pids), abs=ATOL)
    for got, expected in zip(split_grads, full_grads):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Inter-product contrastive (Eq. 8)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "product_ids, queue_product_ids",
    [([0, 1, 2, 3], [4, 5, 6, 7, 8, 9, 10]), ([0, 1, 0, 2], [1, 0, 0, 9, 2, 5, 1])],
)
def test_inter_matches_reference(product_ids, queue_product_ids):
    instances, momentum, queue = (
        _normalized(B, D, seed=4),
        _normalized(B, D, seed=5),
        _normalized(K, D, seed=6),
    )
    pids, qpids = torch.tensor(product_ids), torch.tensor(queue_product_ids)
    loss = _one_process_inter(instances, momentum, torch.tensor(SCALE), pids, queue, qpids)
    expected = reference_inter(instances, momentum, queue, product_ids, queue_product_ids, SCALE)
    assert loss.item() == pytest.approx(expected, abs=ATOL)


def test_inter_empty_or_missing_queue():
    instances, momentum = _normalized(B, D, seed=4), _normalized(B, D, seed=5)
    pids = torch.tensor([0, 1, 0, 2])
    expected = reference_inter(instances, momentum, [], pids, [], SCALE)
    for queue, qpids in ((None, None), (torch.empty(0, D), torch.empty(0, dtype=torch.long))):
        loss = _one_process_inter(instances, momentum, torch.tensor(SCALE), pids, queue, qpids)
        assert loss.item() == pytest.approx(expected, abs=ATOL)


def test_inter_masks_the_queue_slots_not_yet_written():
    """The model passes the whole queue (a fixed shape); slots not yet written (product id -1) are no negatives."""
    instances, momentum, queue = _normalized(B, D, seed=4), _normalized(B, D, seed=5), _normalized(K, D, seed=6)
    pids, qpids = torch.tensor([0, 1, 0, 2]), torch.tensor([4, -1, 5, -1, -1, 6, -1])
    filled = qpids >= 0
    expected = _one_process_inter(instances, momentum, torch.tensor(SCALE), pids, queue[filled], qpids[filled])
    loss = _one_process_inter(instances, momentum, torch.tensor(SCALE), pids, queue, qpids)
    torch.testing.assert_close(loss, expected, atol=ATOL, rtol=0)
    unmasked = _one_process_inter(instances, momentum, torch.tensor(SCALE), pids, queue, qpids.abs())
    assert abs(unmasked.item() - loss.item()) > 1e-3  # the empty slots' features would have counted


def test_inter_same_product_entries_are_not_negatives():
    instances, momentum, queue = (
        _normalized(B, D, seed=4),
        _normalized(B, D, seed=5),
        _normalized(K, D, seed=6),
    )
    pids = torch.tensor([3, 1, 3, 2])
    qpids = torch.tensor([3, 0, 3, 9, 2, 5, 1])
    scale = torch.tensor(SCALE)

    def local_loss(all_momentum, all_queue):  # local row = global row 0 (product 3)
        return inter_product_contrastive_loss(
            instance_embeds=instances[:1],
            all_momentum_embeds=all_momentum,
            logit_scale=scale,
            product_ids=pids[:1],
            all_product_ids=pids,
            queue_embeds=all_queue,
            queue_product_ids=qpids,
        )

    base = local_loss(momentum, queue)
    m, q = momentum.clone(), queue.clone()
    m[2], q[0], q[2] = instances[0], instances[0], instances[0]  # same-product entries: masked
    torch.testing.assert_close(local_loss(m, q), base, atol=ATOL, rtol=0)
    m, q = momentum.clone(), queue.clone()
    q[1] = instances[0]  # an other-product queue entry is a negative
    assert local_loss(m, q).item() > base.item() + 1e-3


def test_inter_two_ranks_equal_single_process_loss_and_gradients():
    batch = 6
    pids = torch.tensor([0, 1, 2, 0, 3, 1])
    qpids = torch.tensor([0, 4, 1, 1, 5, 3, 6])
    instances = _normalized(batch, D, seed=7).requires_grad_()
    momentum = _normalized(batch, D, seed=8)
    queue = _normalized(K, D, seed=9)
    scale = torch.tensor(SCALE, requires_grad=True)

    full = _one_process_inter(instances, momentum, scale, pids, queue, qpids)
    full_grads = torch.autograd.grad(full, (instances, scale))

    def rank_loss(rows, offset):
        return inter_product_contrastive_loss(
            instance_embeds=instances[rows],
            all_momentum_embeds=momentum,
            logit_scale=scale,
            product_ids=pids[rows],
            all_product_ids=pids,
            queue_embeds=queue,
            queue_product_ids=qpids,
            row_offset=offset,
        )

    split = _split_over_ranks(rank_loss, world_size=2, batch=batch)
    split_grads = torch.autograd.grad(split, (instances, scale))
    torch.testing.assert_close(split, full, atol=ATOL, rtol=0)
    expected = reference_inter(instances.detach(), momentum, queue, pids, qpids, SCALE)
    assert full.item() == pytest.approx(expected, abs=ATOL)
    for got, want in zip(split_grads, full_grads):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Hard negatives and instance-text matching (text after Eq. 8)
# ----------------------------------------------------------------------------------------------------------


def test_sample_hard_negatives_never_returns_same_product():
    row_pids = torch.tensor([0, 1, 0, 2])
    column_pids = torch.tensor([0, 1, 0, 2, 1, 0])
    similarity = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    similarity[row_pids[:, None] == column_pids[None, :]] = 50.0  # same-product columns look the hardest
    repeats = 500
    sampled = sample_hard_negatives(
        similarity.repeat(repeats, 1),
        row_pids.repeat(repeats),
        column_pids,
        generator=torch.Generator().manual_seed(1),
    ).view(repeats, 4)
    assert sampled.dtype == torch.long
    assert (column_pids[sampled] != row_pids[None, :]).all()
    # Frequencies follow softmax(similarity) restricted to the other-product columns.
    for row in range(4):
        allowed = column_pids != row_pids[row]
        expected = torch.softmax(similarity[row].masked_fill(~allowed, float("-inf")), dim=0)
        observed = torch.bincount(sampled[:, row], minlength=6).float() / repeats
        torch.testing.assert_close(observed, expected, atol=0.08, rtol=0)


def test_sample_hard_negatives_degenerate_rows_fall_back_to_uniform():
    row_pids = torch.tensor([0, 1, 2, 0])
    column_pids = torch.tensor([0, 1, 2, 3])
    similarity = torch.zeros(4, 4)
    similarity[1] = float("nan")
    similarity[2] = torch.tensor([0.0, float("inf"), 1.0, float("inf")])
    similarity[3] = torch.tensor([float("nan"), float("-inf"), float("-inf"), float("-inf")])
    repeats = 300
    sampled = sample_hard_negatives(
        similarity.repeat(repeats, 1), row_pids.repeat(repeats), column_pids, torch.Generator().manual_seed(0)
    ).view(repeats, 4)
    assert (column_pids[sampled] != row_pids[None, :]).all()
    for row in range(4):  # every allowed column is reachable in the degenerate rows
        allowed = set((column_pids != row_pids[row]).nonzero().flatten().tolist())
        assert set(sampled[:, row].tolist()) == allowed


def test_itm_pairs_each_positive_with_a_hard_negative_text_and_instance():
    """The B positives (h_i, t_i), then h_i with a sampled negative text and t_i with a sampled negative instance, each
    through the head at the query-space scale D; negatives are drawn from the ITC similarities in that order."""
    head = _itm_head()
    instances, images, texts = _normalized(B, D, seed=30), _normalized(B, D, seed=31), _normalized(B, D, seed=32)
    pids = torch.tensor([0, 1, 0, 2])
    torch.manual_seed(5)
    loss = _one_process_itm(head, instances, images, texts, pids)
    torch.manual_seed(5)
    negative_text = sample_hard_negatives(images @ texts.t(), pids, pids)
    negative_image = sample_hard_negatives(texts @ images.t(), pids, pids)
    assert (pids[negative_text] != pids).all() and (pids[negative_image] != pids).all()
    pairs = [(instances[i], texts[i]) for i in range(B)]
    pairs += [(instances[i], texts[negative_text[i]]) for i in range(B)]
    pairs += [(instances[negative_image[i]], texts[i]) for i in range(B)]
    with torch.no_grad():
        logits = torch.stack([head(h * t * D) for h, t in pairs])
    labels = torch.tensor([1] * B + [0] * (2 * B))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_itm(logits, labels), abs=ATOL)


# ----------------------------------------------------------------------------------------------------------
# Intra-product contrastive (Eq. 9) and entropy regulariser (Eq. 10)
# ----------------------------------------------------------------------------------------------------------


def test_intra_matches_reference_and_normalises_slots():
    slots = torch.randn(B, T, D, generator=torch.Generator().manual_seed(4)) * 3  # raw, not normalised
    texts = _normalized(B, D, seed=5)
    positive_index = torch.tensor([0, 4, 2, 0])
    loss = intra_product_contrastive_loss(
        slot_embeds=slots, text_embeds=texts, positive_slot=positive_index, logit_scale=torch.tensor(SCALE)
    )
    assert loss.item() == pytest.approx(reference_intra(slots, texts, positive_index, SCALE), abs=ATOL)
    rescaled = slots * torch.rand(B, T, 1, generator=torch.Generator().manual_seed(6)).add(0.1) * 10
    torch.testing.assert_close(
        intra_product_contrastive_loss(
            slot_embeds=rescaled, text_embeds=texts, positive_slot=positive_index, logit_scale=torch.tensor(SCALE)
        ),
        loss,
        atol=ATOL,
        rtol=0,
    )


def test_entropy_regularizer_matches_reference():
    logits = torch.randn(B, N, T, generator=torch.Generator().manual_seed(7)) * 2
    assignment = torch.softmax(logits, dim=-1)  # Eq. 3: softmax over the T slots
    positive_index = torch.tensor([1, 0, 4, 1])
    loss = _entropy_loss(assignment, positive_index)
    assert loss.item() == pytest.approx(reference_entropy(assignment, positive_index), abs=ATOL)


def test_entropy_regularizer_weighs_the_negative_slots_part():
    logits = torch.randn(B, N, T, generator=torch.Generator().manual_seed(8)) * 2
    entropy = slot_token_entropy(torch.softmax(logits, dim=-1))
    positive_index = torch.tensor([1, 0, 4, 1])
    positive = entropy[torch.arange(B), positive_index].mean().item()
    inputs = {"slot_entropy": entropy, "positive_slot": positive_index, "num_tokens": N}
    full = assignment_entropy_regularizer(**inputs).item()
    none = assignment_entropy_regularizer(**inputs, negative_weight=0.0).item()
    assert none == pytest.approx(positive, abs=ATOL)
    half = assignment_entropy_regularizer(**inputs, negative_weight=0.5).item()
    assert half == pytest.approx(positive + 0.5 * (full - positive), abs=ATOL)


def test_entropy_regularizer_extremes():
    # Positive slot one-hot over tokens (entropy 0), negative slots uniform (log N - log N = 0): loss 0.
    assignment = torch.full((1, N, T), 1.0 / T)
    assignment[0, :, 2] = 0.0
    assignment[0, 3, 2] = 1.0
    loss = _entropy_loss(assignment, torch.tensor([2]))
    assert loss.item() == pytest.approx(0.0, abs=ATOL)
    # Swapped roles: positive uniform (log N) + T-1 one-hot negatives (log N each) = T log N.
    swapped = torch.zeros(1, N, T)
    swapped[0, :, 0] = 1.0
    swapped[0, 0, 1:] = 1.0
    loss = _entropy_loss(swapped, torch.tensor([0]))
    assert loss.item() == pytest.approx(T * math.log(N), abs=1e-4)


# ----------------------------------------------------------------------------------------------------------
# Mixed precision
# ----------------------------------------------------------------------------------------------------------


def test_all_losses_finite_under_bf16_autocast_with_extreme_logits():
    scale = torch.tensor(1e4, requires_grad=True)
    images = _normalized(B, D, seed=10).requires_grad_()
    texts = _normalized(B, D, seed=11).requires_grad_()
    slots = (torch.randn(B, T, D, generator=torch.Generator().manual_seed(12)) * 1e4).requires_grad_()
    attention_logits = (torch.randn(B, N, T, generator=torch.Generator().manual_seed(13)) * 1e4).requires_grad_()
    head = _itm_head()
    with torch.no_grad():
        head.weight.mul_(1e4)  # extreme match logits
    pids = torch.tensor([0, 1, 0, 2])
    qpids = torch.tensor([0, 3, 1, 1, 5, 2, 6])
    queue = _normalized(K, D, seed=15)
    positive_index = torch.tensor([0, 1, 2, 3])

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assignment = torch.softmax(attention_logits.to(torch.bfloat16), dim=-1)  # exact zeros and ones
        losses = {
            "itc": _one_process_itc(images, texts, scale, pids),
            "inter": _one_process_inter(images, texts, scale, pids, queue, qpids),
            "itm": _one_process_itm(head, images, images, texts, pids),
            "intra": intra_product_contrastive_loss(
                slot_embeds=slots, text_embeds=texts, positive_slot=positive_index, logit_scale=scale
            ),
            "entropy": _entropy_loss(assignment, positive_index),
        }
        similarity = scale.detach() * images.detach().to(torch.bfloat16) @ texts.detach().to(torch.bfloat16).t()
        negatives = sample_hard_negatives(similarity, pids, pids)
    assert (pids[negatives] != pids).all()
    for name, loss in losses.items():
        assert loss.dtype == torch.float32, name
        assert torch.isfinite(loss), name
    grads = torch.autograd.grad(sum(losses.values()), (scale, images, texts, slots, attention_logits))
    assert all(torch.isfinite(g).all() for g in grads)


def test_pure_bf16_inputs_give_fp32_losses_close_to_fp32():
    # A model cast to bf16 without autocast: losses are still computed (and returned) in fp32.
    images, texts = _normalized(B, D, seed=16), _normalized(B, D, seed=17)
    pids, qpids = torch.tensor([0, 1, 0, 2]), torch.tensor([0, 3, 1, 1, 5, 2, 6])
    queue = _normalized(K, D, seed=18)
    slots = torch.randn(B, T, D, generator=torch.Generator().manual_seed(19))
    head = _itm_head(20)
    assignment = torch.softmax(torch.randn(B, N, T, generator=torch.Generator().manual_seed(21)), dim=-1)
    positive_index = torch.tensor([0, 1, 2, 3])
    # Two products: each row has one other-product column, so the sampled ITM negatives cannot depend on the dtype.
    two = torch.tensor([0, 1])

    def all_losses(dtype):
        def cast(x):
            return x.to(dtype)

        scale = torch.tensor(SCALE, dtype=dtype)
        return [
            _one_process_itc(cast(images), cast(texts), scale, pids),
            _one_process_inter(cast(images), cast(texts), scale, pids, cast(queue), qpids),
            _one_process_itm(copy.deepcopy(head).to(dtype), cast(images[:2]), cast(images[:2]), cast(texts[:2]), two),
            intra_product_contrastive_loss(
                slot_embeds=cast(slots), text_embeds=cast(texts), positive_slot=positive_index, logit_scale=scale
            ),
            _entropy_loss(cast(assignment), positive_index),
        ]

    for low, high in zip(all_losses(torch.bfloat16), all_losses(torch.float32)):
        assert low.dtype == torch.float32
        torch.testing.assert_close(low, high, atol=0.1, rtol=0.02)


# ----------------------------------------------------------------------------------------------------------
# Distributed gathering
# ----------------------------------------------------------------------------------------------------------


def test_gather_features_is_identity_in_a_single_process():
    assert distributed_rank_and_world_size() == (0, 1)
    features = torch.randn(3, D, requires_grad=True)
    assert gather_features(features) is features


def _two_process_worker(rank: int, world_size: int, init_file: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        assert distributed_rank_and_world_size() == (rank, world_size)
        batch = 6
        local = batch // world_size
        rows = slice(rank * local, (rank + 1) * local)
        pids = torch.tensor([0, 1, 2, 0, 3, 1])
        global_images, global_texts = _normalized(batch, D, seed=20), _normalized(batch, D, seed=21)
        images = global_images[rows].clone().requires_grad_()
        texts = global_texts[rows].clone().requires_grad_()
        all_images, all_texts = gather_features(images), gather_features(texts)
        all_pids = gather_features(pids[rows])  # no-grad path
        torch.testing.assert_close(all_images, global_images)
        assert torch.equal(all_pids, pids)
        scale = torch.tensor(SCALE)
        loss = image_text_contrastive_loss(
            image_embeds=images,
            text_embeds=texts,
            all_image_embeds=all_images,
            all_text_embeds=all_texts,
            logit_scale=scale,
            product_ids=pids[rows],
            all_product_ids=all_pids,
            row_offset=rank * local,
        )
        loss.backward()

        full_images, full_texts = (
            global_images.clone().requires_grad_(),
            global_texts.clone().requires_grad_(),
        )
        full = _one_process_itc(full_images, full_texts, scale, pids)
        full.backward()
        mean_loss = loss.detach().clone()
        torch.distributed.all_reduce(mean_loss)
        torch.testing.assert_close(mean_loss / world_size, full.detach(), atol=ATOL, rtol=0)
        # DDP averages gradients over processes: local grad / world_size == single-process grad of the rows.
        torch.testing.assert_close(images.grad / world_size, full_images.grad[rows], atol=ATOL, rtol=0)
        torch.testing.assert_close(texts.grad / world_size, full_texts.grad[rows], atol=ATOL, rtol=0)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_gather_features_two_processes_match_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        torch.multiprocessing.spawn(_two_process_worker, args=(2, init_file), nprocs=2, join=True)
