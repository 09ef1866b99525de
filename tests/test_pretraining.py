# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Tests of `EclipForPreTraining` (Sec. 3.3): gradients, momentum model, queues, negative prompts, the objectives as
computed by the model, mixed precision, an overfitting run, input validation, checkpoints and 2-process equivalence.

The tiny config and batches live in `tests/helpers.py` (importable by the spawned processes of the distributed test).
"""

import math
import os
import tempfile

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_PROJECTION_DIM as PROJECTION_DIM
from helpers import (
    assert_matches_one_process,
    make_batch,
    run_distributed_worker,
    tiny_pretraining_config,
)

from modeling_eclip import LOSS_NAMES, OBJECTIVES
from modeling_eclip.loss_eclip import (
    assignment_entropy_regularizer,
    image_text_contrastive_loss,
    inter_product_contrastive_loss,
    intra_product_contrastive_loss,
    slot_token_entropy,
)
from modeling_eclip.modeling_eclip import EclipForPreTraining, EclipModel

ATOL = 1e-5


def build(seed: int = 0, train: bool = True, **overrides) -> EclipForPreTraining:
    torch.manual_seed(seed)
    model = EclipForPreTraining(tiny_pretraining_config(**overrides))
    return model.train(train)


def deterministic(**overrides) -> dict:
    """Config overrides that make a forward depend only on the seed of the RNG (positive in slot 0, text prompts)."""
    return {"random_positive_slot": False, "image_prompt_probability": 0.0, **overrides}


def seeded_forward(model: EclipForPreTraining, batch: dict, seed: int = 0):
    torch.manual_seed(seed)
    return model(**batch)


def momentum_targets(model: EclipForPreTraining, batch: dict):
    """h_xi and the momentum text prompts, computed independently with the momentum `EclipModel`'s own forward
    (Sec. 3.4 recipe: text prompt in slot 0, inference negatives)."""
    with torch.no_grad():
        output = model.momentum_eclip(
            pixel_values=batch["positive_pixel_values"],
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
        )
    return output.instance_embeds, output.text_embeds


def online_unimodal_embeds(model: EclipForPreTraining, batch: dict):
    image = model.eclip.get_image_features(batch["pixel_values"]).pooler_output
    text = model.eclip.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1)


def clamped_scale(model: EclipForPreTraining) -> torch.Tensor:
    return model.eclip.logit_scale.clamp(max=model.config.logit_scale_max).exp().squeeze(0)  # 0-d, as the model


def fill_queue(model: EclipForPreTraining, product_ids, seed: int = 7) -> None:
    """Writes random unit features / prompts with the given product ids into the queue (-1 = empty slot)."""
    product_ids = torch.as_tensor(product_ids)
    generator = torch.Generator().manual_seed(seed)
    size = model.config.queue_size
    with torch.no_grad():
        model.queue_embeds.copy_(F.normalize(torch.randn(size, PROJECTION_DIM, generator=generator), dim=-1))
        model.queue_prompts.copy_(F.normalize(torch.randn(size, PROJECTION_DIM, generator=generator), dim=-1))
        model.queue_embeds[product_ids < 0] = 0
        model.queue_prompts[product_ids < 0] = 0
        model.queue_product_ids.copy_(product_ids)


class Recorder:
    """Forward hook that keeps the positional inputs and the output of every call."""

    def __init__(self, module: torch.nn.Module):
        self.calls = []
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.calls.append((args, output))


# ----------------------------------------------------------------------------------------------------------
# Gradients and the momentum model
# ----------------------------------------------------------------------------------------------------------


def test_gradients_reach_every_online_parameter_and_no_momentum_parameter():
    model = build(image_prompt_probability=0.5)
    batch = make_batch([0, 1, 2, 3, 4, 5, 6, 7])
    momentum_before = [p.detach().clone() for p in model.momentum_eclip.parameters()]
    output = seeded_forward(model, batch)
    assert all(getattr(output, name) is not None for name in LOSS_NAMES)
    output.loss.backward()

    trainable = [(f"eclip.{n}", p) for n, p in model.eclip.named_parameters()]
    trainable += [(f"itm_head.{n}", p) for n, p in model.itm_head.named_parameters()]
    no_grad = [name for name, p in trainable if not p.requires_grad or p.grad is None]
    zero_grad = [name for name, p in trainable if p.grad is not None and not bool(p.grad.abs().sum() > 0)]
    assert not no_grad, f"online parameters without a gradient: {no_grad}"
    assert not zero_grad, f"online parameters with an all-zero gradient: {zero_grad}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    # Every parameter of the pretraining model is either online (eclip, itm_head) or momentum.
    online_ids = {id(p) for _, p in trainable}
    momentum = list(model.momentum_eclip.parameters())
    assert len(online_ids) + len(momentum) == len(list(model.parameters()))
    assert all(not p.requires_grad and p.grad is None for p in momentum)

    # An optimiser step over all trainable parameters leaves the momentum model alone (only momentum_update moves it).
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    assert all(torch.equal(before, p) for before, p in zip(momentum_before, momentum))


def test_momentum_update_matches_the_ema_formula_exactly():
    model = build(momentum=0.75)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # Small integers: every value of m * xi + (1 - m) * theta is exact in fp32, so equality must be exact.
        for online, momentum in zip(model.eclip.parameters(), model.momentum_eclip.parameters()):
            online.copy_(torch.randint(-8, 9, online.shape, generator=generator).float())
            momentum.copy_(torch.randint(-8, 9, momentum.shape, generator=generator).float())
    online_before = [p.detach().clone() for p in model.eclip.parameters()]
    momentum_before = [p.detach().clone() for p in model.momentum_eclip.parameters()]
    model.momentum_update()
    for theta, xi_before, xi, theta_after in zip(
        online_before, momentum_before, model.momentum_eclip.parameters(), model.eclip.parameters()
    ):
        assert torch.equal(xi, 0.75 * xi_before + 0.25 * theta)
        assert torch.equal(theta_after, theta)
        assert not xi.requires_grad
    model.momentum_update()  # a second step compounds
    for theta, xi_before, xi in zip(online_before, momentum_before, model.momentum_eclip.parameters()):
        assert torch.equal(xi, 0.75 * (0.75 * xi_before + 0.25 * theta) + 0.25 * theta)


def test_momentum_update_with_default_momentum():
    model = build()
    with torch.no_grad():
        for p in model.eclip.parameters():
            p.add_(1.0)
    online = [p.detach().clone() for p in model.eclip.parameters()]
    before = [p.detach().clone() for p in model.momentum_eclip.parameters()]
    model.momentum_update()
    m = model.config.momentum
    assert m == 0.995
    for theta, xi_before, xi in zip(online, before, model.momentum_eclip.parameters()):
        torch.testing.assert_close(xi, m * xi_before + (1 - m) * theta, atol=1e-7, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Queues
# ----------------------------------------------------------------------------------------------------------


def test_queue_wraps_around_and_holds_the_last_momentum_features():
    model = build(queue_size=16, **deterministic())
    batches = [make_batch(torch.arange(8) + 100 * k, seed=k) for k in range(3)]
    for batch in batches:
        model.enqueue(model(**batch))
    assert int(model.queue_pointer) == 8
    # Slots [0, 8) hold batch 3 (the oldest block, batch 1, was overwritten), slots [8, 16) batch 2.
    for batch, block in ((batches[2], slice(0, 8)), (batches[1], slice(8, 16))):
        features, prompts = momentum_targets(model, batch)
        assert torch.equal(model.queue_product_ids[block], batch["product_ids"])
        torch.testing.assert_close(model.queue_embeds[block], features, atol=ATOL, rtol=0)
        torch.testing.assert_close(model.queue_prompts[block], prompts, atol=ATOL, rtol=0)
    assert not bool(torch.isin(model.queue_product_ids, batches[0]["product_ids"]).any())


def test_queue_pointer_advances_by_the_global_batch():
    model = build(queue_size=16, **deterministic())
    model.enqueue(model(**make_batch(torch.arange(8))))
    assert int(model.queue_pointer) == 8
    assert torch.equal(model.queue_product_ids[:8], torch.arange(8))
    assert bool((model.queue_product_ids[8:] == -1).all())
    assert bool((model.queue_embeds[8:] == 0).all())


def test_forward_changes_no_state_and_eval_mode_has_nothing_to_enqueue():
    model = build(decoder_config={"negative_query_mode": "ema"})
    state = {name: value.clone() for name, value in model.state_dict().items()}
    output = model(**make_batch(torch.arange(8)))
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
    assert output.enqueue_embeds.shape == (8, PROJECTION_DIM) and output.negative_queries_mean.shape == (
        3,
        PROJECTION_DIM,
    )
    model.eval()
    output = model(**make_batch(torch.arange(8) + 8, seed=1))
    assert output.enqueue_embeds is None and output.negative_queries_mean is None
    model.enqueue(output)
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())


def test_empty_queue_slots_are_never_used():
    model = build(train=False, **deterministic())
    queue_ids = [20, 21, -1, -1, 22, -1, 23, 24, -1, 25, -1, -1, 26, 27, 28, -1]
    fill_queue(model, queue_ids)
    batch = make_batch(torch.arange(8), seed=2)
    reference = seeded_forward(model, batch)
    empty = model.queue_product_ids < 0
    with torch.no_grad():
        # Anything in an empty slot: here the batch's own instance features (would dominate every softmax if used).
        model.queue_embeds[empty] = reference.instance_embeds[: int(empty.sum())].detach() * 50
        model.queue_prompts[empty] = reference.text_embeds[: int(empty.sum())].detach() * 50
    output = seeded_forward(model, batch)
    for name in LOSS_NAMES:
        torch.testing.assert_close(output[name], reference[name], atol=1e-6, rtol=0)
    # Control: the filled slots are used (the same overwrite there changes L_inter).
    with torch.no_grad():
        model.queue_embeds[~empty] = reference.instance_embeds.detach()[torch.arange(int((~empty).sum())) % 8] * 50
    changed = seeded_forward(model, batch).loss_inter.detach()
    assert abs(float(changed) - float(reference.loss_inter.detach())) > 1e-3


def _orthogonal_to(rows: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """The unit vector along the part of `vector` orthogonal to every row of `rows`."""
    vector, rows = vector.double(), rows.double()
    vector = vector - rows.t() @ torch.linalg.lstsq(rows.t(), vector).solution
    return F.normalize(vector, dim=0).float()


def test_queue_entries_of_a_rows_own_product_are_never_its_negatives():
    """Entry e of product p (p in the batch): its feature may only enter the loss of rows of *other* products. We write
    two different features into e, both orthogonal to every other-product row's instance feature, so those rows
    see logit 0 either way: L_inter may change only if the rows of product p use e as a negative."""
    model = build(train=False, **deterministic())
    product_ids = torch.tensor([0, 1, 2, 3, 4, 5, 0, 7])  # product 0 twice in the batch
    batch = make_batch(product_ids, seed=4)
    queue_ids = torch.tensor([0, 40, 41, 3, 42, 43, 0, 44, 45, 46, 47, 48, 49, 50, 51, 52])
    fill_queue(model, queue_ids)
    reference = seeded_forward(model, batch)
    instance = reference.instance_embeds.detach()

    def loss_inter_with(entries, feature):
        with torch.no_grad():
            model.queue_embeds[entries] = feature
        return float(seeded_forward(model, batch).loss_inter.detach())

    for product in (0, 3):
        entries = queue_ids == product
        own, others = instance[product_ids == product], instance[product_ids != product]
        # +-v, v = the part of the own rows' mean feature orthogonal to every other-product row: other rows see logit 0
        # either way, the product's own rows see +-(v . h), close to their positive logit.
        feature = _orthogonal_to(others, own.mean(0))
        masked = abs(loss_inter_with(entries, feature) - loss_inter_with(entries, -feature))
        # Control: the same entries relabelled as a product absent from the batch are negatives, and the change shows.
        with torch.no_grad():
            model.queue_product_ids[entries] = 99
        unmasked = abs(loss_inter_with(entries, feature) - loss_inter_with(entries, -feature))
        with torch.no_grad():
            model.queue_product_ids[entries] = product
        assert unmasked > 5e-5, f"control too weak for product {product}: {unmasked}"
        assert masked < 1e-6, f"queue entries of product {product} are used as its own negatives ({masked})"


def test_loss_inter_matches_a_naive_reference_with_duplicates_queue_and_empty_slots():
    """Eq. 8 written out with loops: negatives are the other products' momentum features of the batch and the
    filled queue slots of other products; a product appearing twice (batch or queue) is never its own negative."""
    model = build(train=False, **deterministic())
    product_ids = torch.tensor([5, 1, 2, 5, 4, 1, 6, 7])
    batch = make_batch(product_ids, seed=5)
    queue_ids = torch.tensor([5, 30, -1, 1, 31, 32, -1, 7, 33, 5, 34, -1, 35, 36, 37, 38])
    fill_queue(model, queue_ids)
    output = seeded_forward(model, batch)
    momentum, _ = momentum_targets(model, batch)
    scale = float(clamped_scale(model).detach())
    instance = output.instance_embeds.detach().double()
    total = 0.0
    for i in range(8):
        positive = scale * float(instance[i] @ momentum[i].double())
        logits = [positive]
        logits += [
            scale * float(instance[i] @ momentum[j].double()) for j in range(8) if product_ids[j] != product_ids[i]
        ]
        logits += [
            scale * float(instance[i] @ model.queue_embeds[k].double())
            for k in range(16)
            if queue_ids[k] >= 0 and queue_ids[k] != product_ids[i]
        ]
        top = max(logits)
        total += -(positive - top - math.log(sum(math.exp(v - top) for v in logits)))
    assert float(output.loss_inter.detach()) == pytest.approx(total / 8, abs=1e-4)


# ----------------------------------------------------------------------------------------------------------
# Negative prompt selection
# ----------------------------------------------------------------------------------------------------------


def _identify(negatives: torch.Tensor, candidates: torch.Tensor, gaussian: torch.Tensor) -> list[list[str]]:
    """Names each negative query: `c<i>` for candidate i (in query space) or `g<t>` for Gaussian row t."""
    names = []
    for row in negatives:
        row_names = []
        for vector in row:
            candidate_hits = ((candidates - vector).abs().amax(dim=1) < 1e-5).nonzero().flatten().tolist()
            gaussian_hits = ((gaussian - vector).abs().amax(dim=1) < 1e-5).nonzero().flatten().tolist()
            assert len(candidate_hits) + len(gaussian_hits) == 1, "a negative query that is no candidate"
            row_names.append(f"c{candidate_hits[0]}" if candidate_hits else f"g{gaussian_hits[0]}")
        names.append(row_names)
    return names


def _selection_setup(num_queries: int, batch_ids, queue_ids, seed: int = 0):
    model = build(train=True, decoder_config={"num_queries": num_queries})
    fill_queue(model, queue_ids, seed=seed + 11)
    batch_ids = torch.tensor(batch_ids)
    generator = torch.Generator().manual_seed(seed)
    prompts = F.normalize(torch.randn(len(batch_ids), PROJECTION_DIM, generator=generator), dim=-1)
    candidates = model.eclip.prompts_to_query_space(torch.cat([prompts, model.queue_prompts]))
    candidate_ids = torch.cat([batch_ids, model.queue_product_ids])
    return model, prompts, batch_ids, candidates, candidate_ids


def test_negative_prompts_prefer_the_batch_and_never_the_rows_own_product():
    batch_ids = [0, 1, 1, 2, 3, 3, 3, 4]
    queue_ids = [1, 9, 0, 8, 3, 7, -1, 6, 2, 5, -1, 1, 12, 13, 14, 15]
    # T - 1 = 3 negatives; every row has at least 5 batch candidates of other products, so the queue is never needed.
    model, prompts, batch_ids, candidates, candidate_ids = _selection_setup(4, batch_ids, queue_ids)
    gaussian = model.eclip.gaussian_negative_queries
    seen = set()
    for seed in range(5):
        torch.manual_seed(seed)
        negatives = model._select_negative_queries(prompts, batch_ids, batch_ids)
        assert negatives.shape == (8, 3, PROJECTION_DIM)
        for row, names in enumerate(_identify(negatives, candidates, gaussian)):
            picked = [int(name[1:]) for name in names]
            assert all(name.startswith("c") for name in names), f"row {row}: Gaussian used despite candidates"
            assert all(candidate_ids[i] != batch_ids[row] for i in picked), f"row {row} got its own product"
            assert all(i < 8 for i in picked), f"row {row}: queue used although the batch has enough candidates"
            assert len(set(picked)) == 3, f"row {row}: a candidate picked twice"
            seen.add((row, tuple(sorted(picked))))
    assert len(seen) > 8, "the choice among batch candidates never varies"


def test_negative_prompts_fall_back_to_the_queue_then_to_gaussians():
    # T - 1 = 7. Batch of 4 with product 0 twice; the queue holds 2 usable entries for most rows.
    batch_ids = [0, 0, 1, 2]
    queue_ids = [-1] * 12 + [0, 5, -1, 6]
    model, prompts, batch_ids, candidates, candidate_ids = _selection_setup(8, batch_ids, queue_ids)
    gaussian = model.eclip.gaussian_negative_queries
    torch.manual_seed(0)
    negatives = model._select_negative_queries(prompts, batch_ids, batch_ids)
    names = _identify(negatives, candidates, gaussian)
    queue_usable = {4 + 13, 4 + 15}  # candidates of products 5 and 6
    queue_product_0 = 4 + 12
    expected_sets = {
        0: {2, 3} | queue_usable,  # product 0: batch rows 2 and 3; the queue entry of product 0 is excluded
        1: {2, 3} | queue_usable,
        2: {0, 1, 3, queue_product_0} | queue_usable,
        3: {0, 1, 2, queue_product_0} | queue_usable,
    }
    for row, row_names in enumerate(names):
        picked = [int(n[1:]) for n in row_names if n.startswith("c")]
        assert set(picked) == expected_sets[row] and len(picked) == len(expected_sets[row]), (row, row_names)
        # Batch candidates first, then queue, then the Gaussian top-up in the remaining slots (in slot order).
        num_batch = len({i for i in expected_sets[row] if i < 4})
        assert all(i < 4 for i in picked[:num_batch]) and all(i >= 4 for i in picked[num_batch:]), row_names
        assert row_names[len(picked) :] == [f"g{t}" for t in range(len(picked), 7)]


def test_hard_negative_prompts_are_distinct_products_drawn_by_image_text_similarity():
    # T - 1 = 3. The queue repeats products; hard sampling takes every other product once, never the row's own.
    batch_ids = [0, 1, 2, 3]
    queue_ids = [1, 1, 1, 4, 4, 5, 6, 7, 8, 9, 0, 0, -1, -1, 2, 3]
    model, prompts, batch_ids, candidates, candidate_ids = _selection_setup(4, batch_ids, queue_ids)
    model.config.negative_prompt_sampling = "hard"
    gaussian = model.eclip.gaussian_negative_queries
    all_prompts = torch.cat([prompts, model.queue_prompts])
    # Row 0's image is the queue's product 9 (candidate 4 + 9) at a low temperature: drawn every time; the other rows'
    # images are random at temperature 1, so their draws vary.
    images = F.normalize(torch.randn(4, PROJECTION_DIM, generator=torch.Generator().manual_seed(5)), dim=-1)
    images[0] = all_prompts[4 + 9] * 30.0
    drawn_product_9, varied = 0, set()
    for seed in range(20):
        torch.manual_seed(seed)
        negatives = model._select_negative_queries(prompts, batch_ids, batch_ids, images)
        for row, names in enumerate(_identify(negatives, candidates, gaussian)):
            products = [int(candidate_ids[int(name[1:])]) for name in names]
            assert all(name.startswith("c") for name in names)
            assert batch_ids[row] not in products, f"row {row} got its own product"
            assert len(set(products)) == 3, f"row {row}: one product drawn twice ({products})"
            if row == 0:
                drawn_product_9 += 9 in products
            else:
                varied.add((row, tuple(sorted(products))))
    assert drawn_product_9 == 20
    assert len(varied) > 6
    with pytest.raises(ValueError, match="scaled_image_embeds"):
        model._select_negative_queries(prompts, batch_ids, batch_ids)


def test_hard_negative_prompts_train_end_to_end():
    model = build(train=True, negative_prompt_sampling="hard")
    output = model(**make_batch([0, 1, 2, 3]))
    assert torch.isfinite(output.loss)
    output.loss.backward()
    model.enqueue(output)
    assert int((model.queue_product_ids >= 0).sum()) == 4


def test_negative_prompts_when_there_are_fewer_candidates_than_slots():
    # T - 1 = 23 > 4 + 16 candidate rows: the padding branch.
    batch_ids = [0, 1, 2, 2]
    queue_ids = [3, -1, 0, 4] + [-1] * 12
    model, prompts, batch_ids, candidates, candidate_ids = _selection_setup(24, batch_ids, queue_ids)
    gaussian = model.eclip.gaussian_negative_queries
    torch.manual_seed(0)
    names = _identify(model._select_negative_queries(prompts, batch_ids, batch_ids), candidates, gaussian)
    for row, row_names in enumerate(names):
        valid = {i for i in range(20) if int(candidate_ids[i]) >= 0 and int(candidate_ids[i]) != int(batch_ids[row])}
        picked = [int(n[1:]) for n in row_names if n.startswith("c")]
        assert set(picked) == valid and len(picked) == len(valid), (row, row_names)
        assert row_names[len(picked) :] == [f"g{t}" for t in range(len(picked), 23)]


# ----------------------------------------------------------------------------------------------------------
# The objectives as computed by the model
# ----------------------------------------------------------------------------------------------------------


def _itc_only(**overrides):
    return build(inter_loss_weight=0, itm_loss_weight=0, intra_loss_weight=0, entropy_loss_weight=0, **overrides)


def test_itc_only_equals_the_clip_loss_and_skips_momentum_and_decoder():
    model = _itc_only()
    assert not model.config.uses_decoder_objectives
    recorders = [
        Recorder(module)
        for module in (
            model.eclip.decoder,
            model.momentum_eclip.vision_model,
            model.momentum_eclip.text_model,
            model.momentum_eclip.decoder,
            model.itm_head,
        )
    ]
    batch = make_batch(torch.arange(8) + 3)
    batch.pop("positive_pixel_values")  # not needed
    without_ids = {k: v for k, v in batch.items() if k != "product_ids"}
    output = model(**without_ids)
    assert all(not recorder.calls for recorder in recorders), "momentum model, decoder or ITM head ran"
    assert output.loss_inter is None and output.loss_itm is None
    assert output.loss_intra is None and output.loss_entropy is None
    assert output.instance_embeds is None and output.positive_slot is None
    torch.testing.assert_close(output.loss, output.loss_itc)

    clip = model.eclip(
        pixel_values=batch["pixel_values"],
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        return_loss=True,
    )
    torch.testing.assert_close(output.loss, clip.loss, atol=ATOL, rtol=0)
    # All-distinct product ids mask nothing.
    torch.testing.assert_close(model(**batch).loss, clip.loss, atol=ATOL, rtol=0)

    output.loss.backward()
    assert all(p.grad is None for p in model.eclip.decoder.parameters())
    assert model.eclip.text_projection.weight.grad is not None
    assert int(model.queue_pointer) == 0 and bool((model.queue_product_ids == -1).all())


def test_itc_only_argument_computes_the_itc_only_loss_and_leaves_the_config_alone():
    """`itc_only=True` (the ITC phase of a recipe) gives exactly what the ITC-only config gives, with no momentum model,
    decoder or ITM head, no positive images needed and nothing to enqueue; the config keeps its weights."""
    model = build()
    weights = {name: getattr(model.config, name) for name in model.config.loss_weight_names}
    recorders = [Recorder(module) for module in (model.eclip.decoder, model.momentum_eclip, model.itm_head)]
    batch = make_batch(torch.arange(8) + 3)
    output = model(**_without(batch, "positive_pixel_values"), itc_only=True)
    assert all(not recorder.calls for recorder in recorders), "momentum model, decoder or ITM head ran"
    assert output.loss_inter is None and output.loss_entropy is None and output.enqueue_embeds is None
    torch.testing.assert_close(output.loss, _itc_only()(**batch).loss, atol=0, rtol=0)
    assert {name: getattr(model.config, name) for name in model.config.loss_weight_names} == weights
    assert model(**batch).loss_inter is not None  # the next call without it has every objective again


def test_itc_only_with_duplicate_products_masks_them():
    model = _itc_only()
    product_ids = torch.tensor([0, 1, 0, 2, 3, 1, 4, 5])
    batch = make_batch(product_ids, seed=1)
    batch.pop("positive_pixel_values")
    output = model(**batch)
    image, text = online_unimodal_embeds(model, batch)
    scale = clamped_scale(model)
    one_process = {"image_embeds": image, "text_embeds": text, "all_image_embeds": image, "all_text_embeds": text}
    masked = image_text_contrastive_loss(
        **one_process, logit_scale=scale, product_ids=product_ids, all_product_ids=product_ids
    )
    plain = image_text_contrastive_loss(**one_process, logit_scale=scale)
    torch.testing.assert_close(output.loss, masked, atol=ATOL, rtol=0)
    torch.testing.assert_close(output.loss_itc, masked, atol=ATOL, rtol=0)
    assert abs(float(masked.detach()) - float(plain.detach())) > 1e-4


WEIGHTS = {"itc": 0.5, "inter": 2.0, "itm": 1.5, "intra": 0.25, "entropy": 3.0}


def _weighted_model(weights: dict, **overrides) -> EclipForPreTraining:
    return build(train=False, **{f"{name}_loss_weight": value for name, value in weights.items()}, **overrides)


def test_each_term_is_the_loss_function_applied_to_what_the_model_computed():
    model = _weighted_model(WEIGHTS, image_prompt_probability=0.0)
    queue_ids = [3, 20, 21, -1, 22, 1, 23, -1, 24, 25, 26, 27, 28, 29, 30, 31]
    fill_queue(model, queue_ids)
    product_ids = torch.tensor([0, 1, 2, 3, 4, 1, 6, 7])
    batch = make_batch(product_ids, seed=6)
    decoder = Recorder(model.eclip.decoder)
    itm_head = Recorder(model.itm_head)
    output = seeded_forward(model, batch)
    (queries, patches), decoder_output = decoder.calls[0]
    (itm_inputs,), match_logits = itm_head.calls[0]
    assert len(decoder.calls) == 1 and len(itm_head.calls) == 1
    slots, assignment = decoder_output.last_hidden_state, decoder_output.assignment_maps[-1]
    positive_slot = output.positive_slot
    rows = torch.arange(8)
    scale = clamped_scale(model)

    # Unimodal embeddings and L_itc, from the towers' public feature methods.
    image, text = online_unimodal_embeds(model, batch)
    torch.testing.assert_close(output.image_embeds, image, atol=ATOL, rtol=0)
    torch.testing.assert_close(output.text_embeds, text, atol=ATOL, rtol=0)
    itc = image_text_contrastive_loss(
        image_embeds=image,
        text_embeds=text,
        all_image_embeds=image,
        all_text_embeds=text,
        logit_scale=scale,
        product_ids=product_ids,
        all_product_ids=product_ids,
    )
    torch.testing.assert_close(output.loss_itc, itc, atol=ATOL, rtol=0)

    # Eq. 1: the positive prompt (the product's own text) sits at slot r with q^pos_r and the text type embedding.
    text_raw = model.eclip.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
    expected_positive = (
        model.eclip.prompts_to_query_space(text_raw)
        + model.eclip.query_position_embeddings.weight[positive_slot]
        + model.eclip.query_type_embeddings.weight[0]
    )
    torch.testing.assert_close(queries[rows, positive_slot], expected_positive, atol=ATOL, rtol=0)
    assert len(set(positive_slot.tolist())) > 1, "random_positive_slot should spread the positive over slots"
    torch.testing.assert_close(patches, model.eclip.get_patch_features(batch["pixel_values"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(output.instance_embeds, F.normalize(slots[rows, positive_slot], dim=-1))

    # L_inter against independently computed momentum targets and the filled part of the queue (the model passes the
    # whole queue and the loss masks the empty slots).
    momentum, _ = momentum_targets(model, batch)
    filled = model.queue_product_ids >= 0
    inter = inter_product_contrastive_loss(
        instance_embeds=output.instance_embeds,
        all_momentum_embeds=momentum,
        logit_scale=scale,
        product_ids=product_ids,
        all_product_ids=product_ids,
        queue_embeds=model.queue_embeds[filled],
        queue_product_ids=model.queue_product_ids[filled],
    )
    torch.testing.assert_close(output.loss_inter, inter, atol=ATOL, rtol=0)

    # L_itm: the first B pairs are the positives h ⊙ g_T(w_cls), both at the query-space norm sqrt(D); then 2B hard
    # negatives.
    assert match_logits.shape == (24, 2)
    dim = model.config.projection_dim
    torch.testing.assert_close(itm_inputs[:8], output.instance_embeds * output.text_embeds * dim)
    torch.testing.assert_close(itm_inputs[:8].sum(-1), dim * F.cosine_similarity(output.instance_embeds, text))
    labels = torch.cat([torch.ones(8), torch.zeros(16)]).long()
    torch.testing.assert_close(output.loss_itm, F.cross_entropy(match_logits, labels))

    # L_intra and L_R on the decoder's own slots and last assignment map; the logged entropy is the positive slot's.
    intra = intra_product_contrastive_loss(
        slot_embeds=slots, text_embeds=output.text_embeds, positive_slot=positive_slot, logit_scale=scale
    )
    torch.testing.assert_close(output.loss_intra, intra)
    slot_entropy = slot_token_entropy(assignment)
    entropy = assignment_entropy_regularizer(
        slot_entropy=slot_entropy, positive_slot=positive_slot, num_tokens=assignment.shape[1]
    )
    torch.testing.assert_close(output.loss_entropy, entropy)
    torch.testing.assert_close(output.positive_slot_entropy, slot_entropy[rows, positive_slot].mean())

    total = sum(WEIGHTS[name] * output[f"loss_{name}"] for name in OBJECTIVES)
    torch.testing.assert_close(output.loss, total, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(output.temperature, 1.0 / scale)


def test_image_prompts_come_from_the_momentum_image_of_the_positive():
    model = build(train=False, image_prompt_probability=1.0)
    batch = make_batch(torch.arange(8), seed=8)
    decoder = Recorder(model.eclip.decoder)
    output = seeded_forward(model, batch)
    queries = decoder.calls[0][0][0]
    with torch.no_grad():
        image_prompt = model.momentum_eclip.get_image_features(batch["positive_pixel_values"]).pooler_output
    expected = (
        model.eclip.prompts_to_query_space(image_prompt)
        + model.eclip.query_position_embeddings.weight[output.positive_slot]
        + model.eclip.query_type_embeddings.weight[1]
    )
    torch.testing.assert_close(queries[torch.arange(8), output.positive_slot], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("off", OBJECTIVES)
def test_switching_one_weight_off_removes_exactly_that_term(off):
    batch = make_batch([0, 1, 2, 3, 4, 5, 6, 7], seed=9)
    reference = seeded_forward(_weighted_model(WEIGHTS), batch)
    weights = {**WEIGHTS, off: 0.0}
    output = seeded_forward(_weighted_model(weights), batch)
    assert getattr(output, f"loss_{off}") is None
    for name in OBJECTIVES:
        if name != off:
            torch.testing.assert_close(getattr(output, f"loss_{name}"), reference[f"loss_{name}"], atol=1e-6, rtol=0)
    expected = sum(weights[name] * getattr(output, f"loss_{name}") for name in OBJECTIVES if name != off)
    torch.testing.assert_close(output.loss, expected, atol=1e-5, rtol=1e-6)
    removed = WEIGHTS[off] * reference[f"loss_{off}"]
    torch.testing.assert_close(output.loss, reference.loss - removed, atol=1e-5, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Mixed precision
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("logit_scale", [None, 100.0])
def test_bf16_autocast_forward_backward_is_finite(logit_scale):
    model = build()
    if logit_scale is not None:
        with torch.no_grad():
            model.eclip.logit_scale.fill_(logit_scale)
    batch = make_batch([0, 1, 2, 3, 4, 5, 6, 3], seed=10)
    fill_queue(model, [3, 10, -1, 11, 0, 12, -1, 13] * 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = seeded_forward(model, batch)
    for name in LOSS_NAMES:
        assert output[name] is not None and bool(torch.isfinite(output[name])), name
        assert output[name].dtype == torch.float32, name
    output.loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    assert not bad, f"non-finite gradients: {bad}"
    if logit_scale is not None:
        # Clamped to logit_scale_max = ln(100): tau = 0.01, and no gradient pushes it further.
        torch.testing.assert_close(output.temperature, torch.tensor(0.01), atol=1e-6, rtol=0)
        assert float(model.eclip.logit_scale.grad) == 0.0
    else:
        assert float(model.eclip.logit_scale.grad) != 0.0


# ----------------------------------------------------------------------------------------------------------
# Overfitting a fixed batch
# ----------------------------------------------------------------------------------------------------------


def test_every_term_decreases_when_overfitting_a_fixed_batch():
    """AdamW (lr 1e-3) on one batch of 8 products (positives = image + 0.5 N(0, 1)), momentum update after each step.

    60 steps because L_R (Eq. 10) competes with the other terms early on: they sharpen the negative slots' attention
    too, so its negative part sum_j (log N - H_j) rises while the positive slot's entropy falls; after 30 steps L_R can
    still be above its start for some seeds, after 60 it is below for all of 8 seeds tried.
    """
    model = build(**deterministic())
    batch = make_batch(torch.arange(8) + 40, seed=11, noise=0.5)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    torch.manual_seed(0)
    for _ in range(60):
        output = model(**batch)
        history.append({name: float(output[name].detach()) for name in LOSS_NAMES})
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        model.momentum_update()
        model.enqueue(output)
    first, last = history[0], history[-1]
    print("\noverfit step 0: ", {k: round(v, 4) for k, v in first.items()})
    print(f"overfit step {len(history) - 1}:", {k: round(v, 4) for k, v in last.items()})
    not_lower = {name: (first[name], last[name]) for name in LOSS_NAMES if not last[name] < first[name]}
    assert not not_lower, f"terms that did not decrease (step 0, last): {not_lower}"
    assert last["loss_itc"] < 0.5 * first["loss_itc"] and last["loss_intra"] < 0.5 * first["loss_intra"]


# ----------------------------------------------------------------------------------------------------------
# Bad input: forward names missing inputs and shapes that disagree. Values are the collator's business (a batch of
# one product, which leaves nothing to contrast, is never made: tests/test_data.py checks that ProductPairStream puts
# distinct products in every batch).
# ----------------------------------------------------------------------------------------------------------


def _without(batch: dict, name: str) -> dict:
    return {k: v for k, v in batch.items() if k != name}


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: _without(b, "positive_pixel_values"), "positive_pixel_values.*required"),
        (lambda b: _without(b, "product_ids"), "product_ids are required"),
        (lambda b: {**b, "input_ids": b["input_ids"][:7], "attention_mask": b["attention_mask"][:7]}, "input_ids"),
        (lambda b: {**b, "product_ids": b["product_ids"][:7]}, "product_ids has 7"),
        (lambda b: {**b, "product_ids": b["product_ids"].view(2, 4)}, "1-D"),
        (lambda b: {**b, "positive_pixel_values": b["positive_pixel_values"][:7]}, "positive_pixel_values has 7"),
        (lambda b: _without(b, "pixel_values"), "pixel_values"),
    ],
    ids=[
        "no-positive-images",
        "no-product-ids",
        "input-ids-batch",
        "product-ids-length",
        "product-ids-2d",
        "positive-batch",
        "no-pixel-values",
    ],
)
def test_bad_batches_raise_clear_errors(mutate, match):
    model = build()
    with pytest.raises(ValueError, match=match):
        model(**mutate(make_batch(torch.arange(8))))
    assert int(model.queue_pointer) == 0 and bool((model.queue_product_ids == -1).all())


@pytest.mark.parametrize("weight", ["inter", "itm", "intra", "entropy"])
def test_every_instance_term_needs_positive_images_and_product_ids(weight):
    others = {f"{name}_loss_weight": 0.0 for name in OBJECTIVES if name not in ("itc", weight)}
    model = build(**others)
    batch = make_batch(torch.arange(8))
    with pytest.raises(ValueError, match="positive_pixel_values"):
        model(**_without(batch, "positive_pixel_values"))
    with pytest.raises(ValueError, match="product_ids"):
        model(**_without(batch, "product_ids"))


def test_global_batch_must_fit_the_queue():
    """The rule lives in the config (the training arguments call it before training); the queue's one writer,
    `enqueue`, applies it before every write."""
    config = build(queue_size=16).config
    with pytest.raises(ValueError, match=r"global batch \(32\) is larger than queue_size \(16\)"):
        config.check_global_batch_size(32)
    with pytest.raises(ValueError, match="multiple of the global batch size"):
        config.check_global_batch_size(6)
    config.check_global_batch_size(8)
    config.check_global_batch_size(16)
    small = build(queue_size=4)
    with pytest.raises(ValueError, match="larger than queue_size"):
        small.enqueue(small(**make_batch(torch.arange(8))))
    # Evaluation never enqueues, so any batch size works there.
    assert torch.isfinite(small.eval()(**make_batch(torch.arange(8))).loss)


def test_a_batch_the_queue_cannot_hold_leaves_no_trace():
    """`enqueue` refuses a global batch that would split a queue block before it changes any state."""
    model = build(queue_size=16)
    output = model(**make_batch(torch.arange(6)))
    ema_before = model.eclip.ema_negative_queries.clone()
    with pytest.raises(ValueError, match="multiple of the global batch size"):
        model.enqueue(output)
    assert torch.equal(model.eclip.ema_negative_queries, ema_before), "ema_negative_queries changed by a failed write"
    assert int(model.queue_pointer) == 0 and bool((model.queue_product_ids == -1).all())


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------


def _trained_a_little(**overrides) -> EclipForPreTraining:
    model = build(**deterministic(**overrides))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(2):
        output = model(**make_batch(torch.arange(8) + 10 * step, seed=step))
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.momentum_update()
        model.enqueue(output)
    return model


def test_pretraining_checkpoint_round_trip_keeps_momentum_model_and_queues():
    model = _trained_a_little()
    assert int(model.queue_pointer) == 0 and bool((model.queue_product_ids >= 0).all())  # wrapped once
    differs = any(not torch.equal(a, b) for a, b in zip(model.eclip.parameters(), model.momentum_eclip.parameters()))
    assert differs, "momentum model should lag the online model after training"
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        loaded, info = EclipForPreTraining.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    original, restored = model.state_dict(), loaded.state_dict()
    assert set(original) == set(restored)
    for name, value in original.items():
        assert torch.equal(restored[name], value), name
    torch.testing.assert_close(loaded.eclip.gaussian_negative_queries, model.eclip.gaussian_negative_queries)
    # Same state, same next step.
    batch = make_batch(torch.arange(8) + 70, seed=12)
    torch.testing.assert_close(seeded_forward(loaded.train(), batch).loss, seeded_forward(model, batch).loss)


def test_momentum_model_stays_frozen_after_loading_a_pretraining_checkpoint():
    """`from_pretrained` replaces the parameters, so the momentum model's `requires_grad=False` (set in `__init__` by
    `copy_online_to_momentum`) is lost unless re-applied; only the inference-checkpoint path re-applies it. Unfrozen
    momentum parameters land in `[p for p in model.parameters() if p.requires_grad]` optimiser groups, in
    `num_parameters(only_trainable=True)` and in DDP's reducer (which then waits for gradients that never come)."""
    model = _trained_a_little()
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        loaded = EclipForPreTraining.from_pretrained(directory)
    unfrozen = [name for name, p in loaded.momentum_eclip.named_parameters() if p.requires_grad]
    assert not unfrozen, f"{len(unfrozen)} momentum parameters require grad after loading, e.g. {unfrozen[:2]}"
    assert loaded.num_parameters(only_trainable=True) == model.num_parameters(only_trainable=True)


def test_eclip_model_loads_the_inference_part_of_a_pretraining_checkpoint():
    model = _trained_a_little()
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        inference, info = EclipModel.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert type(inference) is EclipModel
    expected = model.eclip.state_dict()
    assert set(inference.state_dict()) == set(expected)
    for name, value in inference.state_dict().items():
        assert torch.equal(value, expected[name]), name
    torch.testing.assert_close(inference.gaussian_negative_queries, model.eclip.gaussian_negative_queries)


def test_pretraining_from_an_inference_checkpoint_starts_momentum_as_a_copy():
    source = _trained_a_little()
    with tempfile.TemporaryDirectory() as directory:
        source.eclip.save_pretrained(directory)
        model = EclipForPreTraining.from_pretrained(directory)
    for (name, online), loaded, momentum in zip(
        model.eclip.named_parameters(), source.eclip.parameters(), model.momentum_eclip.parameters()
    ):
        assert torch.equal(online, loaded), name
        assert torch.equal(momentum, online), name
        assert not momentum.requires_grad and online.requires_grad
    # Fresh queues: nothing enqueued yet.
    assert int(model.queue_pointer) == 0
    assert bool((model.queue_product_ids == -1).all()) and bool((model.queue_embeds == 0).all())


# ----------------------------------------------------------------------------------------------------------
# "ema" negative queries and the momentum model
# ----------------------------------------------------------------------------------------------------------


def test_ema_mode_momentum_targets_use_the_trained_ema_negatives():
    """With `negative_query_mode="ema"` the Eq. 8 targets h_xi must be decoded with the same inference negatives as the
    online model uses downstream (class docstring: "so the embedding used downstream is the one that Eq. 8 trains"):
    `enqueue` moves the online model's moving average and gives the momentum model the same."""
    model = build(**deterministic(decoder_config={"negative_query_mode": "ema"}))
    model.enqueue(model(**make_batch(torch.arange(8), seed=0)))
    ema = model.eclip.ema_negative_queries.clone()
    assert bool(ema.abs().sum() > 0)
    torch.testing.assert_close(model.momentum_eclip.ema_negative_queries, ema, atol=0, rtol=0)
    batch = make_batch(torch.arange(8) + 8, seed=1)
    model.enqueue(model(**batch))  # enqueues h_xi of this batch in slots [8, 16)
    reference = EclipModel(model.config).eval()
    reference.load_state_dict(model.momentum_eclip.state_dict())
    with torch.no_grad():
        reference.ema_negative_queries.copy_(ema)  # the negatives the online model would use at that step
        expected = reference(
            pixel_values=batch["positive_pixel_values"],
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
        ).instance_embeds
    torch.testing.assert_close(model.queue_embeds[8:16], expected, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Distributed: 2 processes == 1 process on the global batch
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_processes_match_one_process_on_the_global_batch(monkeypatch):
    """Each of 2 gloo processes takes half of a global batch of 8 (product 3 on both), computes all five terms with
    gathered features, backward, then averages gradients and losses as DDP does. Compared with one process on the
    full batch. Determinism (see `helpers`): ITM hard negatives are the arg-max instead of a multinomial
    draw; every valid negative prompt is picked (T - 1 >= batch + queue) and the negative slots share one position
    embedding, so their random order cannot matter; for that embedding the sum over the negative slots is compared.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "rank0.pt")
        rendezvous = os.path.join(directory, "rendezvous")
        torch.multiprocessing.spawn(run_distributed_worker, args=(2, rendezvous, path), nprocs=2, join=True)
        distributed = torch.load(path)

    assert_matches_one_process(distributed, "2 processes")
