# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Where instances matter: the evaluations beyond the paper's tables that tell ECLIP from its CLIP baseline.

- `new_scene_retrieval`: customer photos of *training* products composed afresh (never seen in training) against
  the products' catalog images, image only, within one artwork source and across sources. The paper's claim is that
  instance-level pretraining finds the product in a cluttered photo; this is where it should show first.
- `visual_grounding` (tables.py) on the same new scenes measures text-conditioned grounding.
- `positive_map_diagnostics`: where the positive slot's map lies (its mass in the product's box) and how sharp it is
  (entropy over the N patch tokens / log N); the training loop logs them on held-out images.
- `title_leakage`: a blank image prompted with a product's title must not retrieve that product: the instance
  embedding holds visual information only (Sec. 3.2), so anything above chance would be the title leaking through.

Build the new scenes with the demo builder's `--scene-seed` (same products and titles, new photos):
`python -m modeling_eclip.demo.catalogue --output data/demo-new-scenes --scene-seed 1`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ..grounding_eclip import upsample_score_map
from ..modeling_eclip import EclipModel
from ..processing_eclip import EclipProcessor
from .embedding import CatalogueSplit, embed_images, embed_texts
from .scoring import mass_in_box_over_area, pick_at_k, retrieval_scores, score_maps


def _visual_embeddings(
    model: EclipModel,
    processor: EclipProcessor,
    images: Sequence[Image.Image],
    mode: str,
    batch_size: int,
    bf16: bool | None,
    title_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Image-only embeddings: ECLIP's instance embedding with the image as its own prompt (or with `title_embeds`),
    the global g_I in global mode; unit norm."""
    embeds = embed_images(model, processor, images, title_embeds, mode, batch_size, bf16, title_embeds is None)
    if mode == "global":
        return embeds.image
    return embeds.instance_image if title_embeds is None else embeds.instance_title


def _split_images(
    model: EclipModel,
    processor: EclipProcessor,
    split: CatalogueSplit,
    indices: Sequence[int],
    mode: str,
    batch_size: int,
    bf16: bool | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The image-only embeddings of the split's images at `indices` and the product of each."""
    embeds = _visual_embeddings(model, processor, [split.images[i].to_pil() for i in indices], mode, batch_size, bf16)
    return embeds, torch.tensor([split.images[i].product for i in indices])


def new_scene_retrieval(
    model: EclipModel,
    processor: EclipProcessor,
    split: CatalogueSplit,
    mode: str,
    batch_size: int = 32,
    bf16: bool | None = None,
    k_values: Sequence[int] = (1, 5),
) -> dict[str, Any]:
    """Customer photo -> catalog image of the same product, both embedded from the image alone (R@K), within each
    artwork source (``same_source``) and across sources (``cross_source``); ``chance@1`` is 1 / products."""
    catalog, customer = split.image_indices("catalog"), split.image_indices("customer")
    if not catalog or not customer:
        raise ValueError("new-scene retrieval needs catalog and customer images in the split")
    gallery, gallery_products = _split_images(model, processor, split, catalog, mode, batch_size, bf16)
    queries, query_products = _split_images(model, processor, split, customer, mode, batch_size, bf16)
    same_source = torch.tensor(
        [[split.images[q].source == split.images[g].source for g in catalog] for q in customer], dtype=torch.bool
    )
    scores, relevance = queries @ gallery.T, query_products[:, None] == gallery_products[None, :]
    results: dict[str, Any] = {"chance@1": 1 / len(split.product_ids), "num_queries": len(customer)}
    for name, valid in (("same_source", same_source), ("cross_source", ~same_source)):
        if bool((relevance & valid).any(dim=1).all()):
            results[name] = pick_at_k(retrieval_scores(scores, relevance, k_values, valid), "r", k_values)
    return results


@torch.inference_mode()
def positive_map_diagnostics(
    model: EclipModel,
    processor: EclipProcessor,
    split: CatalogueSplit,
    mode: str,
    batch_size: int = 32,
    max_images: int | None = None,
) -> dict[str, float]:
    """On the split's customer and ad images (the first `max_images`), prompted with their product's title: the
    score map's mass in the product's box over the box's share of the image (1 = uniform; ECLIP's positive-slot map,
    the patch-text map in global mode) and, in instance mode, the positive slot's map entropy over the N patch tokens
    / log N (1 = uniform, 0 = one token)."""
    boxed = [i for kind in ("customer", "ad") for i in split.image_indices(kind) if split.images[i].boxes][:max_images]
    if not boxed:  # a dataset without boxes
        return {"num_images": 0}
    images = [split.images[i].to_pil() for i in boxed]
    titles = [split.titles[split.images[i].product] for i in boxed]
    if mode == "instance":
        # One decoder pass per batch gives both: the patch-grid map for the entropy, its upsampled copy for the box.
        maps, entropies = [], []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            inputs = processor(images=batch, text=titles[start : start + batch_size]).to(model.device)
            grids = model.get_grounding_map(**inputs).float()
            maps += [upsample_score_map(grid, image) for grid, image in zip(grids, batch)]
            flat = grids.flatten(1)
            distribution = flat / flat.sum(dim=1, keepdim=True).clamp_min(1e-12)
            entropies.append(-(distribution * distribution.clamp_min(1e-12).log()).sum(dim=1) / math.log(flat.shape[1]))
    else:
        maps = score_maps(model, processor, images, titles, mode, batch_size)
    mass = [mass_in_box_over_area(score_map, split.images[i].boxes[0]) for score_map, i in zip(maps, boxed)]
    results = {"mass_in_box_over_area": sum(mass) / len(mass), "num_images": len(boxed)}
    if mode == "instance":
        results["entropy_over_log_n"] = float(torch.cat(entropies).mean())
    return results


@torch.inference_mode()
def title_leakage(
    model: EclipModel,
    processor: EclipProcessor,
    split: CatalogueSplit,
    batch_size: int = 32,
    bf16: bool | None = None,
) -> dict[str, float]:
    """A blank image prompted with each product's title, as a query against the catalog images (image only): R@1 of
    the title's own product, next to chance (1 / products). Instance mode only."""
    catalog = split.image_indices("catalog")
    gallery, gallery_products = _split_images(model, processor, split, catalog, "instance", batch_size, bf16)
    blank = [Image.new("RGB", (model.config.image_size,) * 2, (245, 245, 245))] * len(split.titles)
    titles = embed_texts(model, processor, split.titles, batch_size, bf16)
    queries = _visual_embeddings(model, processor, blank, "instance", batch_size, bf16, title_embeds=titles)
    relevance = torch.arange(len(split.titles))[:, None] == gallery_products[None, :]
    results = retrieval_scores(queries @ gallery.T, relevance, (1,))
    return {"r@1": results["r@1"], "chance@1": 1 / len(split.titles)}
