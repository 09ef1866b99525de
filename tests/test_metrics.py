# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The evaluate.Metric subclasses against small cases computed by hand (design doc section 4 definitions)."""

import math

import pytest
import torch

from modeling_eclip.evaluation.metrics import ClassificationAccuracy, GroundingAccuracy, RetrievalMetric, rank_by_score


def retrieval(**kwargs) -> dict:
    return RetrievalMetric(keep_in_memory=True).compute(**kwargs)


def test_retrieval_single_match_by_hand():
    # Query 0 ranks [3, 1, 2], match {1} at rank 2. Query 1 ranks [5, 6, 7], match {5} at rank 1.
    # R@1 = (0 + 1) / 2 = 0.5; R@5 = 1.
    # AP@1: q0 = 0 (no hit in top 1), q1 = P@1 * 1 / min(1, 1) = 1 -> mAP@1 = 0.5.
    # AP@5: q0 = P@2 * rel_2 / min(5, 1) = (1/2) / 1 = 0.5, q1 = 1 -> mAP@5 = 0.75.
    # mAR@1 = (0 + 1) / 2 = 0.5; MRR = (1/2 + 1) / 2 = 0.75.
    # nDCG@10: q0 = (1/log2(3)) / (1/log2(2)) = 0.63093, q1 = 1 -> 0.815465.
    out = retrieval(predictions=[[3, 1, 2], [5, 6, 7]], references=[[1], [5]], k_values=[1, 5])
    assert out["r@1"] == 0.5 and out["r@5"] == 1.0
    assert out["map@1"] == 0.5 and out["map@5"] == 0.75
    assert out["mar@1"] == 0.5 and out["mar@5"] == 1.0
    assert out["mrr"] == 0.75
    assert out["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert out["num_queries"] == 2


def test_retrieval_multiple_matches_by_hand():
    # One query ranks [a, b, c, d, e] = [10, 11, 12, 13, 14]; matches {10, 12, 20} (20 is never ranked).
    # rel = [1, 0, 1, 0, 0]; P@1 = 1, P@3 = 2/3.
    # AP@1 = (1 * 1) / min(1, 3) = 1.
    # AP@3 = (1 + 2/3) / min(3, 3) = 5/9.
    # AP@5 = (1 + 2/3) / min(5, 3) = 5/9 (no more hits after rank 3).
    # Recall: @1 = 1/3, @3 = 2/3, @5 = 2/3. R@1 = 1. MRR = 1.
    # nDCG@10: DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) + 1/log2(4) = 2.130930 -> 0.703918.
    out = retrieval(predictions=[[10, 11, 12, 13, 14]], references=[[10, 12, 20]], k_values=[1, 3, 5])
    assert out["map@1"] == 1.0
    assert out["map@3"] == pytest.approx(5 / 9)
    assert out["map@5"] == pytest.approx(5 / 9)
    assert out["mar@1"] == pytest.approx(1 / 3) and out["mar@3"] == pytest.approx(2 / 3)
    assert out["r@1"] == 1.0 and out["mrr"] == 1.0
    assert out["ndcg@10"] == pytest.approx(1.5 / (1 + 1 / math.log2(3) + 0.5))


def test_retrieval_ap_uses_min_k_matches():
    # Two matches {1, 2} ranked at 1 and 2, K = 1: AP@1 = P@1 / min(1, 2) = 1 (not 1/2), while mAR@1 = 1/2.
    out = retrieval(predictions=[[1, 2, 3]], references=[[1, 2]], k_values=[1])
    assert out["map@1"] == 1.0 and out["mar@1"] == 0.5


def test_retrieval_no_hit_and_short_ranking():
    # The ranking is cut to 2 items, none a match: every metric is 0 for K beyond the ranking too.
    out = retrieval(predictions=[[4, 5]], references=[[9]], k_values=[1, 10])
    assert out["r@10"] == out["map@10"] == out["mar@10"] == out["mrr"] == out["ndcg@10"] == 0.0


def test_retrieval_bad_input():
    with pytest.raises(ValueError, match="no matching gallery item"):
        retrieval(predictions=[[1, 2]], references=[[]])
    with pytest.raises(ValueError, match="twice"):
        retrieval(predictions=[[1, 1]], references=[[1]])
    with pytest.raises(ValueError, match="k_values"):
        retrieval(predictions=[[1]], references=[[1]], k_values=[0])


def test_rank_by_score_is_stable_and_cut():
    scores = torch.tensor([[0.1, 0.9, 0.9, 0.3]])
    # Ties keep the lower index first: 1 before 2.
    assert rank_by_score(scores).tolist() == [[1, 2, 3, 0]]
    assert rank_by_score(scores, 2).tolist() == [[1, 2]]
    assert rank_by_score(scores, 10).shape == (1, 4)
    with pytest.raises(ValueError, match="matrix"):
        rank_by_score(torch.zeros(3))


def test_classification_accuracy_by_hand():
    # Sample 0: ranking [2, 0, 1], true 0 -> miss at 1, hit at 2. Sample 1: [1, 2, 0], true 1 -> hit at 1.
    # Sample 2: [0, 1, 2], true 2 -> miss at 1 and 2, hit at 3.
    # Acc@1 = 1/3, Acc@2 = 2/3, Acc@3 = 1.
    out = ClassificationAccuracy(keep_in_memory=True).compute(
        predictions=[[2, 0, 1], [1, 2, 0], [0, 1, 2]], references=[0, 1, 2], top_k=[1, 2, 3]
    )
    assert out["acc@1"] == pytest.approx(1 / 3)
    assert out["acc@2"] == pytest.approx(2 / 3)
    assert out["acc@3"] == 1.0
    assert out["num_samples"] == 3


def test_metrics_accumulate_batches():
    # add_batch then compute sees both batches: q0 hit at rank 1, q1 hit at rank 2 -> MRR = (1 + 1/2) / 2.
    metric = RetrievalMetric(keep_in_memory=True)
    metric.add_batch(predictions=[[1, 2]], references=[[1]])
    metric.add_batch(predictions=[[1, 2]], references=[[2]])
    assert metric.compute(k_values=[1])["mrr"] == 0.75


def test_grounding_accuracy_by_hand():
    # Sample 0: identical boxes, IoU 1. Sample 1: [0,0,10,10] vs [0,0,10,20]: intersection 100, union 200 -> 0.5.
    # Sample 2: [0,0,10,10] vs [5,5,15,15]: intersection 5*5 = 25, union 100 + 100 - 25 = 175 -> 1/7.
    # Acc@0.5 = 2/3 (IoU 0.5 counts: >=), Acc@0.7 = 1/3, mean IoU = (1 + 0.5 + 1/7) / 3.
    out = GroundingAccuracy(keep_in_memory=True).compute(
        predictions=[[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]],
        references=[[0, 0, 10, 10], [0, 0, 10, 20], [5, 5, 15, 15]],
    )
    assert out["acc@0.5"] == pytest.approx(2 / 3)
    assert out["acc@0.7"] == pytest.approx(1 / 3)
    assert out["mean_iou"] == pytest.approx((1 + 0.5 + 1 / 7) / 3)
    assert out["num_samples"] == 3
