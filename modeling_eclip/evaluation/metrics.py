# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Evaluation metrics of the ECLIP paper (Sec. 4.2) as `evaluate.Metric` subclasses.

They live in this package and are instantiated directly (``RetrievalMetric()``), never loaded from the Hub. Inputs
are rankings, so galleries of any size (and galleries that differ per query) are handled the same way::

    >>> metric = RetrievalMetric(keep_in_memory=True)
    >>> metric.compute(predictions=[[3, 1, 2]], references=[[1]], k_values=[1, 5])["map@5"]
    0.5

Definitions (design doc section 4; K is the cut-off, rel_k = 1 when the k-th ranked item is a match):

* R@K: share of queries with at least one match in the top K.
* AP@K = (1 / min(K, #matches)) * sum_{k <= K} P@k * rel_k, with P@k the share of matches in the top k; mAP@K is
  its mean over queries.
* mAR@K: mean over queries of the recall at K, (#matches in the top K) / #matches (Table 3, Product1M).
* MRR: mean of 1 / rank of the first match (0 when no match is ranked).
* nDCG@K with binary relevance: sum_{k <= K} rel_k / log2(k + 1), divided by the same sum for the ideal ranking.
* Acc@IoU (grounding): share of samples whose top-ranked box has IoU >= the threshold with the true box.
* Acc@K (classification): share of samples whose true label is among the top K predicted labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import datasets
import evaluate
import torch

from ..grounding_eclip import box_iou

_CITATION = """\
@inproceedings{jin2023eclip,
  title={Learning Instance-Level Representation for Large-Scale Multi-Modal Pretraining in E-commerce},
  author={Jin, Yang and Li, Yongzhi and Yuan, Zehuan and Mu, Yadong},
  booktitle={CVPR},
  year={2023}
}
"""


def rank_by_score(scores: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Indices of the columns of a `(queries, items)` score matrix, best first, cut to the top `k` (all if None).

    Turns a similarity matrix into the rankings the metrics below take; ties keep the lower index first.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be a (queries, items) matrix, got shape {tuple(scores.shape)}")
    k = scores.shape[1] if k is None else min(k, scores.shape[1])
    return torch.sort(scores.float(), dim=1, descending=True, stable=True).indices[:, :k]


def _check_cutoffs(values: Sequence[int], name: str) -> list[int]:
    values = [int(value) for value in values]
    if not values or any(value < 1 for value in values):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {values!r}")
    return values


class RetrievalMetric(evaluate.Metric):
    """Retrieval with any number of matches per query: R@K, mAP@K, mAR@K for every K in `k_values`, MRR, nDCG@K.

    `predictions[i]` is query i's ranking of gallery item ids, best first (it may be cut to the largest K);
    `references[i]` lists the ids of all gallery items that match query i (at least one). Ids are integers, unique
    within a ranking. Result keys: ``r@K``, ``map@K``, ``mar@K`` per K, ``mrr``, ``ndcg@{ndcg_k}``, ``num_queries``.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Retrieval metrics with multiple matches per query (ECLIP paper, Tables 2 and 3).",
            citation=_CITATION,
            inputs_description=(
                "predictions: list of rankings (gallery ids, best first); references: list of the matching ids; "
                "k_values: cut-offs (default 1, 5, 10); ndcg_k: nDCG cut-off (default 10)."
            ),
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(
        self,
        predictions: list[list[int]],
        references: list[list[int]],
        k_values: Sequence[int] = (1, 5, 10),
        ndcg_k: int = 10,
    ) -> dict[str, float]:
        k_values = _check_cutoffs(k_values, "k_values")
        (ndcg_k,) = _check_cutoffs([ndcg_k], "ndcg_k")
        if not predictions:
            raise ValueError("RetrievalMetric needs at least one query")
        sums = {key: 0.0 for k in k_values for key in (f"r@{k}", f"map@{k}", f"mar@{k}")}
        sums["mrr"] = sums[f"ndcg@{ndcg_k}"] = 0.0
        for index, (ranking, matches) in enumerate(zip(predictions, references)):
            matches = set(matches)
            if not matches:
                raise ValueError(f"query {index} has no matching gallery item; AP and recall are undefined for it")
            if len(set(ranking)) != len(ranking):
                raise ValueError(f"query {index}: the ranking lists a gallery id twice")
            relevant = [item in matches for item in ranking]
            hits = 0
            precision_sum = 0.0  # running sum_{k} P@k * rel_k
            first_hit = None
            running = {}  # k -> (hits in top k, sum of P@j rel_j for j <= k)
            for rank, is_match in enumerate(relevant, start=1):
                if is_match:
                    hits += 1
                    precision_sum += hits / rank
                    first_hit = first_hit or rank
                running[rank] = (hits, precision_sum)
            for k in k_values:
                hits_k, precision_k = running[min(k, len(ranking))] if ranking else (0, 0.0)
                sums[f"r@{k}"] += float(hits_k > 0)
                sums[f"map@{k}"] += precision_k / min(k, len(matches))
                sums[f"mar@{k}"] += hits_k / len(matches)
            sums["mrr"] += 1.0 / first_hit if first_hit else 0.0
            dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(relevant[:ndcg_k], start=1) if hit)
            ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(ndcg_k, len(matches)) + 1))
            sums[f"ndcg@{ndcg_k}"] += dcg / ideal
        results = {key: value / len(predictions) for key, value in sums.items()}
        results["num_queries"] = len(predictions)
        return results


class ClassificationAccuracy(evaluate.Metric):
    """Acc@K for every K in `top_k`: `predictions[i]` ranks the label ids for sample i (best first),
    `references[i]` is its true label id. Result keys ``acc@K`` and ``num_samples``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Top-K classification accuracy (ECLIP paper, Table 1 zero-shot classification).",
            citation=_CITATION,
            inputs_description="predictions: ranked label ids per sample; references: true label id; top_k: (1,).",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(
        self, predictions: list[list[int]], references: list[int], top_k: Sequence[int] = (1,)
    ) -> dict[str, float]:
        top_k = _check_cutoffs(top_k, "top_k")
        if not predictions:
            raise ValueError("ClassificationAccuracy needs at least one sample")
        results = {
            f"acc@{k}": sum(label in ranking[:k] for ranking, label in zip(predictions, references)) / len(predictions)
            for k in top_k
        }
        results["num_samples"] = len(predictions)
        return results


class GroundingAccuracy(evaluate.Metric):
    """Acc@IoU for every threshold in `iou_thresholds`: `predictions[i]` is sample i's top-ranked box,
    `references[i]` its true box, both `[x0, y0, x1, y1]` pixels with exclusive `x1` / `y1`. Result keys
    ``acc@0.5`` etc., ``mean_iou`` and ``num_samples``."""

    def _info(self) -> evaluate.MetricInfo:
        box = datasets.Sequence(datasets.Value("float64"), length=4)
        return evaluate.MetricInfo(
            description="Zero-shot grounding accuracy at IoU thresholds (ECLIP paper, Table 4 left).",
            citation=_CITATION,
            inputs_description="predictions: top box per sample; references: true box; iou_thresholds: (0.5, 0.7).",
            features=datasets.Features({"predictions": box, "references": box}),
        )

    def _compute(
        self,
        predictions: list[list[float]],
        references: list[list[float]],
        iou_thresholds: Sequence[float] = (0.5, 0.7),
    ) -> dict[str, float]:
        if not predictions:
            raise ValueError("GroundingAccuracy needs at least one sample")
        ious = box_iou(predictions, references).diagonal()
        results = {f"acc@{threshold:g}": float((ious >= threshold).double().mean()) for threshold in iou_thresholds}
        results["mean_iou"] = float(ious.mean())
        results["num_samples"] = len(predictions)
        return results
