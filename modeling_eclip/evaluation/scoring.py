# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""What the paper's tables (`tables.py`) and the instance evaluations (`instances.py`) both score with: the metrics of
`metrics.py` over score matrices, and the score maps that grounding ranks boxes by."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..grounding_eclip import grounding_score_maps, upsample_score_map
from ..modeling_eclip import EclipModel
from ..processing_eclip import EclipProcessor
from .embedding import dense_image_features, patch_grid_side, process, progress, text_features, whole_image_kwargs
from .metrics import ClassificationAccuracy, GroundingAccuracy, RetrievalMetric, rank_by_score


def _metric(cls: type) -> Any:
    return cls(keep_in_memory=True)


def retrieval_scores(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    k_values: Sequence[int],
    valid: torch.Tensor | None = None,
    ndcg_k: int = 10,
) -> dict[str, float]:
    """`RetrievalMetric` over a `(queries, gallery)` score matrix with a boolean relevance matrix of the same shape.

    `valid` (same shape, optional) removes gallery items from a query's ranking (e.g. items of the query's own
    source). A query without any valid match (its product's gallery images were unreadable, say) is left out and
    counted as ``queries_without_match``; at least one query must have a match.
    """
    if scores.shape != relevance.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and relevance {tuple(relevance.shape)} differ in shape")
    depth = max(max(k_values), ndcg_k)
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
        relevance = relevance & valid
    rankings = rank_by_score(scores, depth)
    predictions = []
    for query, ranking in enumerate(rankings.tolist()):
        # Invalid items sink to the end under -inf; they must not fill the top of a short gallery.
        predictions.append([item for item in ranking if valid is None or bool(valid[query, item])])
    references = [row.nonzero().flatten().tolist() for row in relevance]
    answerable = [query for query, matches in enumerate(references) if matches]
    if not answerable:
        raise ValueError(f"none of the {len(references)} queries has a matching gallery item")
    results = _metric(RetrievalMetric).compute(
        predictions=[predictions[q] for q in answerable],
        references=[references[q] for q in answerable],
        k_values=list(k_values),
        ndcg_k=ndcg_k,
    )
    results["queries_without_match"] = len(references) - len(answerable)
    return results


def classification_scores(scores: torch.Tensor, labels: Sequence[int], top_k: Sequence[int] = (1,)) -> dict:
    """`ClassificationAccuracy` over a `(samples, classes)` score matrix."""
    rankings = rank_by_score(scores, max(top_k)).tolist()
    return _metric(ClassificationAccuracy).compute(predictions=rankings, references=list(labels), top_k=list(top_k))


def grounding_scores(predictions: Sequence[Sequence[float]], references: Sequence[Sequence[float]]) -> dict:
    """`GroundingAccuracy` of each sample's top-ranked box against its true box (Acc@0.5, Acc@0.7)."""
    return _metric(GroundingAccuracy).compute(predictions=predictions, references=references)


def pick_at_k(results: Mapping[str, float], prefix: str, k_values: Sequence[int]) -> dict[str, float]:
    """The ``<prefix>@<k>`` entries of a metric's results, e.g. ``pick_at_k(results, "r", (1, 5))``: R@1 and R@5."""
    return {f"{prefix}@{k}": results[f"{prefix}@{k}"] for k in k_values}


@torch.inference_mode()
def global_score_maps(
    model: EclipModel,
    processor: EclipProcessor,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    batch_size: int = 32,
) -> list[torch.Tensor]:
    """Dense CLIP score maps for the global baseline: cos(g_I(v_i), g_T(w_cls)) per patch token v_i, upsampled to
    each image's size. An ITC-only model never trained its decoder (whose slot assignment is ECLIP's map, see
    `grounding_eclip.grounding_score_maps`), so its patch tokens go through the trained image projection instead; so
    do a CLIP-style model's (`embedding.dense_image_features`), whose image is resized whole, not centre-cropped."""
    maps = []
    whole = whole_image_kwargs(processor)
    for start in progress(range(0, len(images), batch_size), "grounding"):
        batch = list(images[start : start + batch_size])
        inputs = process(processor, model.device, images=batch, text=list(texts[start : start + batch_size]), **whole)
        patches = F.normalize(dense_image_features(model, inputs["pixel_values"]), dim=-1)
        text = F.normalize(text_features(model, {k: v for k, v in inputs.items() if k != "pixel_values"}), dim=-1)
        side = patch_grid_side(patches.shape[1])
        grids = torch.einsum("bnd,bd->bn", patches, text).reshape(-1, 1, side, side).float()
        maps += [upsample_score_map(grid[0], image) for grid, image in zip(grids, batch)]
    return maps


def score_maps(
    model: EclipModel,
    processor: EclipProcessor,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    mode: str,
    batch_size: int = 32,
) -> list[torch.Tensor]:
    """Each image's score map for its text, `(height, width)`: ECLIP's prompted slot (instance mode,
    `grounding_eclip.grounding_score_maps`) or the dense map of a global model (`global_score_maps`)."""
    if mode != "instance":
        return global_score_maps(model, processor, images, texts, batch_size)
    maps = []
    for start in progress(range(0, len(texts), batch_size), "grounding"):
        batch, prompts = list(images[start : start + batch_size]), list(texts[start : start + batch_size])
        maps += grounding_score_maps(model, processor, batch, texts=prompts, batch_size=batch_size)
    return maps


def mass_in_box_over_area(score_map: torch.Tensor, box: Sequence[float]) -> float:
    """The share of a score map's (negative values clipped) mass inside `box` over the box's share of the map's area:
    1 for a map no better than uniform, higher the more the map concentrates on the box."""
    weights = score_map.clamp_min(0)
    height, width = weights.shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    area = max(0, x1 - x0) * max(0, y1 - y0) / (height * width)
    if area == 0:
        return 0.0
    return float(weights[y0:y1, x0:x1].sum() / weights.sum().clamp_min(1e-12)) / area
