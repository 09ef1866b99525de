# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Pretraining objectives of ECLIP (Jin et al., CVPR 2023, Sec. 3.3, Eq. 6-10).

Pure-torch functions, one per objective. This file is shipped as transformers "remote code", so it imports
only `torch` and the standard library.

Distributed convention: the model gathers features over processes *with gradients* (`gather_features`) and
every contrastive loss takes the LOCAL rows (this process' batch) and the GLOBAL columns (the gathered
batch). `row_offset = rank * local_batch_size`, so the positive column of local row `i` is
`row_offset + i`. Losses are means over the local rows; with DDP gradient averaging over processes this is
exactly the single-process loss (and gradient) on the concatenated global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "assignment_entropy_regularizer",
    "distributed_rank_and_world_size",
    "gather_features",
    "image_text_contrastive_loss",
    "instance_text_matching_loss",
    "inter_product_contrastive_loss",
    "intra_product_contrastive_loss",
    "sample_hard_negatives",
]


# --------------------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------------------


def distributed_rank_and_world_size() -> tuple[int, int]:
    """Returns `(rank, world_size)` of the default process group, `(0, 1)` when not running distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_features(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenates `tensor` along dim 0 over all processes, keeping gradients.

    Identity in a single process. Every process must pass a tensor of the same shape (the collective requires
    it). Tensors that require grad go through `torch.distributed.nn.functional.all_gather`, whose backward
    sums the gradients of all processes into the local slice, so that DDP's gradient averaging reproduces the
    single-process gradient of the global batch. Tensors without grad (e.g. product ids, momentum features)
    use the plain collective.
    """
    _, world_size = distributed_rank_and_world_size()
    if world_size == 1:
        return tensor
    if tensor.requires_grad:
        # Imported lazily: the module is absent from some builds and only needed when distributed.
        from torch.distributed.nn.functional import all_gather

        gathered = list(all_gather(tensor))
    else:
        gathered = [torch.empty_like(tensor) for _ in range(world_size)]
        torch.distributed.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


# --------------------------------------------------------------------------------------------------------
# Internal helpers
# --------------------------------------------------------------------------------------------------------


def _check_2d(name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"`{name}` must be 2-D (batch, dim), got shape {tuple(tensor.shape)}.")


def _check_ids(name: str, ids: torch.Tensor, expected: int, expected_name: str) -> None:
    if ids.dim() != 1 or ids.shape[0] != expected:
        raise ValueError(
            f"`{name}` must have shape ({expected},) to match {expected_name}, got shape {tuple(ids.shape)}."
        )


def _check_row_offset(row_offset: int, local_batch: int, global_batch: int, columns_name: str) -> None:
    if row_offset < 0 or row_offset + local_batch > global_batch:
        raise ValueError(
            f"`row_offset` ({row_offset}) + local batch size ({local_batch}) exceeds the {global_batch} rows "
            f"of `{columns_name}`: the local rows must be a slice of the gathered (global) batch."
        )


def _check_index_range(positive_index: torch.Tensor, num_slots: int) -> None:
    if positive_index.numel() > 0 and bool(((positive_index < 0) | (positive_index >= num_slots)).any()):
        raise ValueError(f"`positive_index` out of range: every value must be in [0, {num_slots}) (T slots).")


def _masked_cross_entropy(logits: torch.Tensor, ignore_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over fp32 logits where `ignore_mask` columns are removed from the softmax denominator.

    fp32 because log-softmax over large scaled similarities is not stable in bf16/fp16. The masked value is
    a large negative *finite* number (not -inf) so that `exp` underflows to exactly 0 without producing NaN;
    the positive column is never masked, so every row keeps a finite maximum.
    """
    logits = logits.float()
    logits = logits.masked_fill(ignore_mask, torch.finfo(logits.dtype).min / 2)
    return F.cross_entropy(logits, labels)


def _same_product_mask(
    row_product_ids: torch.Tensor, column_product_ids: torch.Tensor, positive_columns: torch.Tensor | None
) -> torch.Tensor:
    """(rows, columns) bool mask of same-product columns, excluding each row's own positive column."""
    mask = row_product_ids[:, None] == column_product_ids[None, :]
    if positive_columns is not None:
        rows = torch.arange(mask.shape[0], device=mask.device)
        mask[rows, positive_columns] = False
    return mask


# --------------------------------------------------------------------------------------------------------
# Image-text contrastive learning (Eq. 6-7)
# --------------------------------------------------------------------------------------------------------


def image_text_contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    all_image_embeds: torch.Tensor,
    all_text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    product_ids: torch.Tensor | None,
    all_product_ids: torch.Tensor | None,
    row_offset: int = 0,
) -> torch.Tensor:
    """Image-text contrastive loss `L_itc = (L_i2t + L_t2i) / 2` (Eq. 6-7).

    `L_i2t` contrasts each local image `g_I(v_cls)` against all (gathered) texts `g_T(w_cls)` and `L_t2i`
    each local text against all images, with logits `s / tau = logit_scale * image^T text`.

    Deviation from the plain equation: columns of the *same product* as the row (other than the positive
    itself) are removed from the denominator, because two samples of one product are not a negative pair.

    Args:
        image_embeds (`torch.Tensor` of shape `(B, D)`): local L2-normalised image embeddings.
        text_embeds (`torch.Tensor` of shape `(B, D)`): local L2-normalised text embeddings.
        all_image_embeds (`torch.Tensor` of shape `(B_global, D)`): gathered image embeddings.
        all_text_embeds (`torch.Tensor` of shape `(B_global, D)`): gathered text embeddings.
        logit_scale (`torch.Tensor`, scalar): the *exponentiated* scale, `1 / tau`.
        product_ids (`torch.LongTensor` of shape `(B,)` or `None`): product ids of the local rows.
        all_product_ids (`torch.LongTensor` of shape `(B_global,)` or `None`): gathered product ids. When
            both ids are `None` no column is masked (plain CLIP loss).
        row_offset (`int`): index of the first local row in the global batch (`rank * B`).

    Returns:
        `torch.Tensor`: scalar fp32 loss, mean over the local rows.
    """
    for name, tensor in (
        ("image_embeds", image_embeds),
        ("text_embeds", text_embeds),
        ("all_image_embeds", all_image_embeds),
        ("all_text_embeds", all_text_embeds),
    ):
        _check_2d(name, tensor)
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"image and text batch sizes/dims differ: `image_embeds` {tuple(image_embeds.shape)} vs "
            f"`text_embeds` {tuple(text_embeds.shape)}."
        )
    if all_image_embeds.shape != all_text_embeds.shape:
        raise ValueError(
            f"gathered image and text batch sizes/dims differ: `all_image_embeds` "
            f"{tuple(all_image_embeds.shape)} vs `all_text_embeds` {tuple(all_text_embeds.shape)}."
        )
    if all_image_embeds.shape[1] != image_embeds.shape[1]:
        raise ValueError(
            f"embedding dims differ: local {image_embeds.shape[1]} vs gathered {all_image_embeds.shape[1]}."
        )
    batch_size, global_batch_size = image_embeds.shape[0], all_image_embeds.shape[0]
    _check_row_offset(row_offset, batch_size, global_batch_size, "all_image_embeds")
    if (product_ids is None) != (all_product_ids is None):
        raise ValueError("`product_ids` and `all_product_ids` must both be given or both be None.")

    labels = torch.arange(batch_size, device=image_embeds.device) + row_offset
    if product_ids is not None:
        _check_ids("product_ids", product_ids, batch_size, "the local batch size")
        _check_ids("all_product_ids", all_product_ids, global_batch_size, "the gathered batch size")
        # Same mask for both directions: row i and column j are the same product either way.
        ignore_mask = _same_product_mask(product_ids, all_product_ids, labels)
    else:
        ignore_mask = torch.zeros(batch_size, global_batch_size, dtype=torch.bool, device=image_embeds.device)

    logits_per_image = logit_scale * image_embeds @ all_text_embeds.t()
    logits_per_text = logit_scale * text_embeds @ all_image_embeds.t()
    loss_i2t = _masked_cross_entropy(logits_per_image, ignore_mask, labels)
    loss_t2i = _masked_cross_entropy(logits_per_text, ignore_mask, labels)
    return 0.5 * (loss_i2t + loss_t2i)


# --------------------------------------------------------------------------------------------------------
# Inter-product multi-modal learning (Eq. 8 and the instance-text matching loss)
# --------------------------------------------------------------------------------------------------------


def inter_product_contrastive_loss(
    instance_embeds: torch.Tensor,
    all_momentum_embeds: torch.Tensor,
    queue_embeds: torch.Tensor | None,
    product_ids: torch.Tensor,
    all_product_ids: torch.Tensor,
    queue_product_ids: torch.Tensor | None,
    logit_scale: torch.Tensor,
    row_offset: int = 0,
) -> torch.Tensor:
    """Inter-product contrastive loss `L_inter` (Eq. 8).

    For local row `i`, the positive pair is `(h_theta^i, h_xi^j)` with `j = row_offset + i`: the online
    model's instance feature of image `x` against the momentum model's instance feature of `x+`, another
    image of the same product. The negative set `N^-` ("belongs to other products") is every other entry of
    the gathered momentum batch plus the queue of past momentum features, *excluding* any entry with the
    row's product id.

    Args:
        instance_embeds (`torch.Tensor` of shape `(B, D)`): local L2-normalised `h_theta` (positive slot).
        all_momentum_embeds (`torch.Tensor` of shape `(B_global, D)`): gathered L2-normalised momentum
            features `h_xi` of the positive images. Expected without grad (momentum model).
        queue_embeds (`torch.Tensor` of shape `(K, D)` or `None`): queue of past momentum features; may be
            empty (`K = 0`) or `None`.
        product_ids (`torch.LongTensor` of shape `(B,)`): product ids of the local rows.
        all_product_ids (`torch.LongTensor` of shape `(B_global,)`): gathered product ids.
        queue_product_ids (`torch.LongTensor` of shape `(K,)` or `None`): product ids of the queue entries.
        logit_scale (`torch.Tensor`, scalar): the exponentiated scale `1 / tau`.
        row_offset (`int`): index of the first local row in the global batch.

    Returns:
        `torch.Tensor`: scalar fp32 loss, mean over the local rows.
    """
    _check_2d("instance_embeds", instance_embeds)
    _check_2d("all_momentum_embeds", all_momentum_embeds)
    if instance_embeds.shape[1] != all_momentum_embeds.shape[1]:
        raise ValueError(
            f"embedding dims differ: `instance_embeds` {tuple(instance_embeds.shape)} vs "
            f"`all_momentum_embeds` {tuple(all_momentum_embeds.shape)}."
        )
    batch_size, global_batch_size = instance_embeds.shape[0], all_momentum_embeds.shape[0]
    _check_row_offset(row_offset, batch_size, global_batch_size, "all_momentum_embeds")
    _check_ids("product_ids", product_ids, batch_size, "the local batch size of `instance_embeds`")
    _check_ids("all_product_ids", all_product_ids, global_batch_size, "the rows of `all_momentum_embeds`")
    if (queue_embeds is None) != (queue_product_ids is None):
        raise ValueError("`queue_embeds` and `queue_product_ids` must both be given or both be None.")

    labels = torch.arange(batch_size, device=instance_embeds.device) + row_offset
    logits = logit_scale * instance_embeds @ all_momentum_embeds.t()
    ignore_mask = _same_product_mask(product_ids, all_product_ids, labels)

    if queue_embeds is not None and queue_embeds.shape[0] > 0:
        _check_2d("queue_embeds", queue_embeds)
        if queue_embeds.shape[1] != instance_embeds.shape[1]:
            raise ValueError(
                f"embedding dims differ: `queue_embeds` {tuple(queue_embeds.shape)} vs `instance_embeds` "
                f"{tuple(instance_embeds.shape)}."
            )
        _check_ids("queue_product_ids", queue_product_ids, queue_embeds.shape[0], "the rows of `queue_embeds`")
        queue_logits = logit_scale * instance_embeds @ queue_embeds.t()
        # The positive lives in the batch part, so every same-product queue entry is masked.
        queue_mask = _same_product_mask(product_ids, queue_product_ids, None)
        logits = torch.cat([logits, queue_logits.to(logits.dtype)], dim=1)
        ignore_mask = torch.cat([ignore_mask, queue_mask], dim=1)

    return _masked_cross_entropy(logits, ignore_mask, labels)


@torch.no_grad()
def sample_hard_negatives(
    similarity: torch.Tensor,
    row_product_ids: torch.Tensor,
    column_product_ids: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Samples one hard negative column per row for the instance-text matching loss (text after Eq. 8).

    ALBEF-style: column `j` is drawn with probability `softmax(similarity[i])_j`, after setting the weight of
    every column of the row's own product (including the positive) to 0, so a sample of the same product is
    never used as a "non-matching" pair. One vectorised `torch.multinomial` call, fp32, without gradients.
    Rows whose weights are non-finite or all zero (e.g. NaN similarities) fall back to uniform sampling over
    the allowed columns.

    Args:
        similarity (`torch.Tensor` of shape `(B, C)`): e.g. the ITC logits of local rows vs gathered columns.
        row_product_ids (`torch.LongTensor` of shape `(B,)`): product ids of the rows.
        column_product_ids (`torch.LongTensor` of shape `(C,)`): product ids of the columns.
        generator (`torch.Generator`, *optional*): random generator for reproducible sampling.

    Returns:
        `torch.LongTensor` of shape `(B,)`: the sampled column index for each row.

    Raises:
        `ValueError`: on shape mismatches, or if some row has no column of another product.
    """
    _check_2d("similarity", similarity)
    _check_ids("row_product_ids", row_product_ids, similarity.shape[0], "the rows of `similarity`")
    _check_ids("column_product_ids", column_product_ids, similarity.shape[1], "the columns of `similarity`")

    allowed = row_product_ids[:, None] != column_product_ids[None, :]
    if not bool(allowed.any(dim=1).all()):
        raise ValueError(
            "Cannot sample a hard negative: every product in the batch is the same product as the row "
            "(no column of another product). Use batches with at least two distinct products."
        )

    similarity = similarity.float()
    weights = torch.softmax(similarity.masked_fill(~allowed, float("-inf")), dim=1)
    weights = weights.masked_fill(~allowed, 0.0)
    # NaN/inf similarities make softmax NaN; a row whose weights are unusable samples uniformly instead.
    invalid_rows = ~torch.isfinite(weights).all(dim=1) | (weights.sum(dim=1) <= 0)
    weights = torch.where(invalid_rows[:, None], allowed.float(), weights)
    return torch.multinomial(weights, num_samples=1, generator=generator).squeeze(1)


def instance_text_matching_loss(match_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Instance-text matching loss `L_itm` (text after Eq. 8).

    `match_logits = f(h_theta ⊙ g_T(w_cls))` are 2-way logits of an (instance, text) pair; the binary
    matched / not-matched decision is trained with cross-entropy over the 2 classes (equivalent to a binary
    cross-entropy on the logit difference).

    Args:
        match_logits (`torch.Tensor` of shape `(N, 2)`): match logits of the pairs.
        labels (`torch.LongTensor` of shape `(N,)`): `1` for matched pairs, `0` for non-matched.

    Returns:
        `torch.Tensor`: scalar fp32 loss, mean over the pairs.
    """
    if match_logits.dim() != 2 or match_logits.shape[1] != 2:
        raise ValueError(f"`match_logits` must have shape (N, 2), got {tuple(match_logits.shape)}.")
    _check_ids("labels", labels, match_logits.shape[0], "the number of pairs in `match_logits`")
    if labels.numel() > 0 and bool(((labels != 0) & (labels != 1)).any()):
        raise ValueError("`labels` of the instance-text matching loss must be 0 (not matched) or 1 (matched).")
    return F.cross_entropy(match_logits.float(), labels.long())


# --------------------------------------------------------------------------------------------------------
# Intra-product multi-modal learning (Eq. 9-10)
# --------------------------------------------------------------------------------------------------------


def intra_product_contrastive_loss(
    slot_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    positive_index: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Intra-product contrastive loss `L_intra` (Eq. 9).

    For each sample, a softmax over its T decoder slots of `h_t^T g_T(w_cls) / tau`; the target is the slot
    `r` that holds the positive prompt.

    Args:
        slot_embeds (`torch.Tensor` of shape `(B, T, D)`): final decoder slots `h_t^L`. They are
            L2-normalised *inside* this function (raw decoder outputs are expected).
        text_embeds (`torch.Tensor` of shape `(B, D)`): L2-normalised `g_T(w_cls)` of each sample.
        positive_index (`torch.LongTensor` of shape `(B,)`): index `r` of the positive slot, in `[0, T)`.
        logit_scale (`torch.Tensor`, scalar): the exponentiated scale `1 / tau`.

    Returns:
        `torch.Tensor`: scalar fp32 loss, mean over the batch.
    """
    if slot_embeds.dim() != 3:
        raise ValueError(f"`slot_embeds` must be 3-D (batch, slots, dim), got {tuple(slot_embeds.shape)}.")
    _check_2d("text_embeds", text_embeds)
    batch_size, num_slots, dim = slot_embeds.shape
    if text_embeds.shape != (batch_size, dim):
        raise ValueError(
            f"`text_embeds` must have shape ({batch_size}, {dim}) to match `slot_embeds` "
            f"{tuple(slot_embeds.shape)}, got {tuple(text_embeds.shape)}."
        )
    _check_ids("positive_index", positive_index, batch_size, "the batch size of `slot_embeds`")
    _check_index_range(positive_index, num_slots)

    slot_embeds = F.normalize(slot_embeds, dim=-1)
    logits = logit_scale * torch.einsum("btd,bd->bt", slot_embeds, text_embeds.to(slot_embeds.dtype))
    return F.cross_entropy(logits.float(), positive_index.long())


def assignment_entropy_regularizer(
    assignment: torch.Tensor, positive_index: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Entropy regularisation `L_R` of the slot-attention map `M` (Eq. 10).

    `L_R = H(M_{:, r}) + sum_{j != r} (log N - H(M_{:, j}))`, with `H(p) = sum_i p_i log(1 / p_i)` over the N
    image tokens: the positive slot `r` is pushed to focus on few tokens, the negative slots are kept from
    too sharp distributions.

    `M` (Eq. 3) is a softmax over the T slots, so its columns do not sum to 1 over the tokens; each slot's
    column is normalised over the N tokens first, so that `H` is the entropy of a distribution over tokens
    and lies in `[0, log N]`. Computed in fp32 with clamped logs, so it stays finite under bf16 autocast and
    with all-zero columns.

    Args:
        assignment (`torch.Tensor` of shape `(B, N, T)`): slot-attention map `M`, after the softmax over T.
        positive_index (`torch.LongTensor` of shape `(B,)`): index `r` of the positive slot, in `[0, T)`.
        eps (`float`): clamp for the column sums and the logs.

    Returns:
        `torch.Tensor`: scalar fp32 loss, mean over the batch.
    """
    if assignment.dim() != 3:
        raise ValueError(f"`assignment` must be 3-D (batch, tokens, slots), got {tuple(assignment.shape)}.")
    batch_size, num_tokens, num_slots = assignment.shape
    _check_ids("positive_index", positive_index, batch_size, "the batch size of `assignment`")
    _check_index_range(positive_index, num_slots)

    assignment = assignment.float()
    distribution = assignment / assignment.sum(dim=1, keepdim=True).clamp_min(eps)
    entropy = -(distribution * distribution.clamp_min(eps).log()).sum(dim=1)  # (B, T)

    is_positive = F.one_hot(positive_index.long(), num_slots).bool()
    positive_term = entropy.masked_select(is_positive)  # (B,): exactly one positive per row
    negative_term = (math.log(num_tokens) - entropy).masked_fill(is_positive, 0.0).sum(dim=1)
    return (positive_term + negative_term).mean()
