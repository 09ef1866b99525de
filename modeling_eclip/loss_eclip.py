# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Pretraining objectives of ECLIP (Jin et al., CVPR 2023, Sec. 3.3, Eq. 6-10), one function per equation.

`EclipForPreTraining` checks its inputs once and calls these functions with tensors of consistent shapes; they do not
check them again. The losses take keyword arguments only: several are tensors of one shape (local and gathered image
and text embeddings), which positional calls could swap without an error. Shipped as transformers "remote code", so
this file imports only `torch` and the standard library.

Distributed convention: the model gathers features over processes *with gradients* (`gather_features`, the one
gather) and every contrastive loss takes the LOCAL rows (this process' batch) and the GLOBAL columns (the gathered
batch). `row_offset = rank * local_batch_size`, so the positive column of local row `i` is `row_offset + i`. Losses are
means over the local rows; with DDP gradient averaging over processes this is exactly the single-process loss (and
gradient) on the concatenated global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "assignment_entropy_regularizer",
    "distributed_rank_and_world_size",
    "gather_features",
    "image_text_contrastive_loss",
    "instance_text_matching_loss",
    "inter_product_contrastive_loss",
    "intra_product_contrastive_loss",
    "sample_hard_negatives",
    "slot_token_entropy",
]


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


def mean_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over all processes (a copy; identity in a single process). With equal local batches, the
    mean over processes of per-process batch means is the global batch's mean."""
    _, world_size = distributed_rank_and_world_size()
    if world_size == 1:
        return tensor
    total = tensor.detach().clone()
    torch.distributed.all_reduce(total)
    return total / world_size


def same_product_mask(
    row_product_ids: torch.Tensor, column_product_ids: torch.Tensor, positive_columns: torch.Tensor | None = None
) -> torch.Tensor:
    """(rows, columns) bool mask of same-product columns, excluding each row's own positive column."""
    mask = row_product_ids[:, None] == column_product_ids[None, :]
    if positive_columns is not None:
        rows = torch.arange(mask.shape[0], device=mask.device)
        mask[rows, positive_columns] = False
    return mask


def masked_cross_entropy(logits: torch.Tensor, ignore_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over fp32 logits where `ignore_mask` columns are removed from the softmax denominator.

    fp32 because log-softmax over large scaled similarities is not stable in bf16/fp16. The masked value is a large
    negative *finite* number (not -inf) so that `exp` underflows to exactly 0 without producing NaN; the positive
    column is never masked, so every row keeps a finite maximum.
    """
    logits = logits.float()
    logits = logits.masked_fill(ignore_mask, torch.finfo(logits.dtype).min / 2)
    return F.cross_entropy(logits, labels)


def image_text_contrastive_loss(
    *,
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    all_image_embeds: torch.Tensor,
    all_text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    product_ids: torch.Tensor | None = None,
    all_product_ids: torch.Tensor | None = None,
    row_offset: int = 0,
) -> torch.Tensor:
    """Image-text contrastive loss `L_itc = (L_i2t + L_t2i) / 2` (Eq. 6-7).

    `L_i2t` contrasts each local image `g_I(v_cls)` `(B, D)` against all gathered texts `g_T(w_cls)` `(B_global, D)`
    and `L_t2i` each local text against all images, with logits `s / tau = logit_scale * image^T text` (`logit_scale`
    is the exponentiated `1 / tau`). Embeddings are L2-normalised.

    Deviation from the plain equation: columns of the *same product* as the row (other than the positive itself) are
    removed from the denominator, because two samples of one product are not a negative pair. Without product ids
    (both `None`) no column is masked: the plain CLIP loss. Returns the fp32 mean over the local rows.
    """
    batch_size, global_batch_size = image_embeds.shape[0], all_image_embeds.shape[0]
    labels = torch.arange(batch_size, device=image_embeds.device) + row_offset
    if product_ids is not None:
        # Same mask for both directions: row i and column j are the same product either way.
        ignore_mask = same_product_mask(product_ids, all_product_ids, labels)
    else:
        ignore_mask = torch.zeros(batch_size, global_batch_size, dtype=torch.bool, device=image_embeds.device)
    logits_per_image = logit_scale * image_embeds @ all_text_embeds.t()
    logits_per_text = logit_scale * text_embeds @ all_image_embeds.t()
    loss_i2t = masked_cross_entropy(logits_per_image, ignore_mask, labels)
    loss_t2i = masked_cross_entropy(logits_per_text, ignore_mask, labels)
    return 0.5 * (loss_i2t + loss_t2i)


def inter_product_contrastive_loss(
    *,
    instance_embeds: torch.Tensor,
    all_momentum_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    product_ids: torch.Tensor,
    all_product_ids: torch.Tensor,
    queue_embeds: torch.Tensor | None = None,
    queue_product_ids: torch.Tensor | None = None,
    row_offset: int = 0,
) -> torch.Tensor:
    """Inter-product contrastive loss `L_inter` (Eq. 8).

    For local row `i`, the positive pair is `(h_theta^i, h_xi^j)` with `j = row_offset + i`: the online model's
    instance feature `(B, D)` of image `x` against the momentum model's instance feature of `x+`, another image of the
    same product, gathered over processes `(B_global, D)`. The negative set `N^-` ("belongs to other products") is
    every other entry of the gathered momentum batch plus the queue of past momentum features `(K, D)` (may be empty or
    `None`), *excluding* any entry with the row's product id. Queue entries with a negative product id are slots not
    yet written and are masked too, so the whole queue is passed (a fixed shape, no boolean indexing). Returns the fp32
    mean over the local rows.
    """
    batch_size = instance_embeds.shape[0]
    labels = torch.arange(batch_size, device=instance_embeds.device) + row_offset
    logits = logit_scale * instance_embeds @ all_momentum_embeds.t()
    ignore_mask = same_product_mask(product_ids, all_product_ids, labels)
    if queue_embeds is not None and queue_embeds.shape[0] > 0:
        queue_logits = logit_scale * instance_embeds @ queue_embeds.t()
        # The positive lives in the batch part, so every same-product queue entry is masked, and so is every empty one.
        queue_mask = same_product_mask(product_ids, queue_product_ids) | (queue_product_ids < 0)[None, :]
        logits = torch.cat([logits, queue_logits.to(logits.dtype)], dim=1)
        ignore_mask = torch.cat([ignore_mask, queue_mask], dim=1)
    return masked_cross_entropy(logits, ignore_mask, labels)


@torch.no_grad()
def sample_hard_negatives(
    similarity: torch.Tensor,
    row_product_ids: torch.Tensor,
    column_product_ids: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Samples one hard negative column per row of `similarity` `(B, C)`, returned as `(B,)` column indices.

    ALBEF-style: column `j` is drawn with probability `softmax(similarity[i])_j`, after setting the weight of every
    column of the row's own product (including the positive) to 0, so a sample of the same product is never used as a
    "non-matching" pair. One vectorised `torch.multinomial` call, fp32, without gradients. Rows whose weights are
    non-finite or all zero (e.g. NaN similarities) fall back to uniform sampling over the allowed columns. Every row
    needs a column of another product (the model rejects batches of a single product).
    """
    allowed = row_product_ids[:, None] != column_product_ids[None, :]
    similarity = similarity.float()
    weights = torch.softmax(similarity.masked_fill(~allowed, float("-inf")), dim=1)
    weights = weights.masked_fill(~allowed, 0.0)
    # NaN/inf similarities make softmax NaN; a row whose weights are unusable samples uniformly instead.
    invalid_rows = ~torch.isfinite(weights).all(dim=1) | (weights.sum(dim=1) <= 0)
    weights = torch.where(invalid_rows[:, None], allowed.float(), weights)
    return torch.multinomial(weights, num_samples=1, generator=generator).squeeze(1)


def instance_text_matching_loss(
    *,
    itm_head: nn.Module,
    instance_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    all_image_embeds: torch.Tensor,
    all_text_embeds: torch.Tensor,
    product_ids: torch.Tensor,
    all_product_ids: torch.Tensor,
) -> torch.Tensor:
    """Instance-text matching loss `L_itm` (text after Eq. 8): match logits `f(h ⊙ g_T(w_cls))` of `itm_head`
    (`R^D -> R^2`), trained with cross-entropy over matched / not matched.

    As in ALBEF, the pairs are each local positive `(h_theta, g_T)`, a hard negative text per instance and a hard
    negative instance per text, sampled (`sample_hard_negatives`) from the ITC similarities of the gathered batch with
    same-product pairs masked. Both factors enter at norm sqrt(D), the query-space scale of
    `EclipModel.prompts_to_query_space`: the product of two unit vectors has entries of order 1/D, too small an input
    for `f`. Embeddings are the L2-normalised local `(B, D)` and gathered `(B_global, D)` ones; returns the fp32 mean
    over the 3B pairs.
    """
    all_instance_embeds = gather_features(instance_embeds)
    with torch.no_grad():
        negative_text = sample_hard_negatives(image_embeds @ all_text_embeds.t(), product_ids, all_product_ids)
        negative_image = sample_hard_negatives(text_embeds @ all_image_embeds.t(), product_ids, all_product_ids)
    instances = torch.cat([instance_embeds, instance_embeds, all_instance_embeds[negative_image]], dim=0)
    texts = torch.cat([text_embeds, all_text_embeds[negative_text], text_embeds], dim=0)
    match_logits = itm_head(instances * texts * instance_embeds.shape[-1])
    # Matched (1) for the B positives, then not matched (0); built on the device, not copied from the host.
    labels = (torch.arange(match_logits.shape[0], device=match_logits.device) < instance_embeds.shape[0]).long()
    return F.cross_entropy(match_logits.float(), labels)


def intra_product_contrastive_loss(
    *,
    slot_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    positive_slot: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Intra-product contrastive loss `L_intra` (Eq. 9).

    For each sample, a softmax over its T decoder slots `h_t^L` `(B, T, D)`, L2-normalised here, of
    `h_t^T g_T(w_cls) / tau` with the normalised text `(B, D)`; the target is the slot `r` `(B,)` that holds the
    positive prompt. Returns the fp32 mean over the batch.
    """
    slot_embeds = F.normalize(slot_embeds, dim=-1)
    logits = logit_scale * torch.einsum("btd,bd->bt", slot_embeds, text_embeds.to(slot_embeds.dtype))
    return F.cross_entropy(logits.float(), positive_slot.long())


def slot_token_entropy(assignment: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """`H(M_{:, t}) = sum_i p_i log(1 / p_i)` of every slot's map over the N image tokens, `(B, T)`, in nats.

    `M` `(B, N, T)` (Eq. 3) is a softmax over the T slots, so its columns do not sum to 1 over the tokens; each slot's
    column is normalised over the N tokens first, so that `H` is the entropy of a distribution over tokens and lies in
    `[0, log N]`. Computed in fp32 with the column sums and the logs clamped at `eps`, so it stays finite under bf16
    autocast and with all-zero columns.
    """
    assignment = assignment.float()
    distribution = assignment / assignment.sum(dim=1, keepdim=True).clamp_min(eps)
    return -(distribution * distribution.clamp_min(eps).log()).sum(dim=1)


def assignment_entropy_regularizer(
    *, slot_entropy: torch.Tensor, positive_slot: torch.Tensor, num_tokens: int, negative_weight: float = 1.0
) -> torch.Tensor:
    """Entropy regularisation `L_R` of the slot-attention map `M` (Eq. 10).

    `L_R = H(M_{:, r}) + w * sum_{j != r} (log N - H(M_{:, j}))` from the per-slot token entropies `(B, T)` of
    `slot_token_entropy` over `num_tokens` = N tokens: the positive slot `r` `(B,)` is pushed to focus on few tokens,
    the negative slots are kept from too sharp distributions; `w = negative_weight` (the paper: 1). Returns the fp32
    mean over the batch.
    """
    is_positive = F.one_hot(positive_slot.long(), slot_entropy.shape[1]).bool()
    # A gather, not masked_select: its output shape is fixed, so the device need not report how many entries are True.
    positive_term = slot_entropy.gather(1, positive_slot.long().unsqueeze(1)).squeeze(1)
    negative_term = (math.log(num_tokens) - slot_entropy).masked_fill(is_positive, 0.0).sum(dim=1)
    return (positive_term + negative_weight * negative_term).mean()
