# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The paper's zero-shot evaluations (Sec. 4.2, Tables 1-4) on an embedded catalogue split, scored as `scoring.py`
does: `evaluate_model` runs them all with those of `instances.py`, `quick_evaluate` the two headline numbers the
training loop logs."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..data.source import CatalogueSource
from ..grounding_eclip import DEFAULT_WINDOW_FRACTIONS, box_iou, candidate_boxes, overlay_heatmap, rank_boxes
from ..modeling_eclip import EclipModel
from ..pipeline_eclip import DEFAULT_HYPOTHESIS_TEMPLATE
from ..processing_eclip import EclipProcessor
from .embedding import (
    FULL_VIEWS,
    PRODUCT_VIEWS,
    QUICK_VIEWS,
    CatalogueSplit,
    EmbeddedSplit,
    EmbeddingMode,
    check_positive_int,
    embed_split,
    evaluation_of,
    load_catalogue_split,
    resolve_embedding_mode,
)
from .instances import new_scene_retrieval, positive_map_diagnostics, title_leakage
from .report import figure_to_image, plot_tsne, tsne_figure
from .scoring import (
    classification_scores,
    grounding_scores,
    mass_in_box_over_area,
    pick_at_k,
    retrieval_scores,
    score_maps,
)

logger = logging.getLogger(__name__)


def _products_and_sources(embedded: EmbeddedSplit, kind: str) -> tuple[torch.Tensor, list[str]]:
    images = [embedded.split.images[i] for i in embedded.indices[kind]]
    return torch.tensor([image.product for image in images]), [image.source for image in images]


def _catalog_categories(embedded: EmbeddedSplit) -> list[str]:
    """The category of each catalog image, in the rows of its views."""
    products, _ = _products_and_sources(embedded, "catalog")
    return [embedded.split.categories[p] for p in products.tolist()]


def _other_source_mask(query_sources: Sequence[str], gallery_sources: Sequence[str]) -> torch.Tensor:
    return torch.tensor([[q != g for g in gallery_sources] for q in query_sources], dtype=torch.bool)


def zero_shot_classification(embedded: EmbeddedSplit) -> dict[str, float]:
    """Table 1 left: Acc@1 of catalog images against the category prompts, per product view."""
    category_index = {name: i for i, name in enumerate(embedded.split.category_names)}
    labels = [category_index[category] for category in _catalog_categories(embedded)]
    results = {}
    for view in [view for view in PRODUCT_VIEWS if view in embedded.views["catalog"]]:
        embeds = embedded.views["catalog"][view]
        results[f"acc@1 ({view})"] = classification_scores(embeds @ embedded.category_embeds.T, labels)["acc@1"]
    return results


def image_text_retrieval(embedded: EmbeddedSplit, k_values: Sequence[int] = (1, 5)) -> dict[str, dict[str, float]]:
    """Table 1 right: catalog images g_I vs product titles g_T, both directions (an image matches its title; a
    title matches every catalog image of its product)."""
    products, _ = _products_and_sources(embedded, "catalog")
    image = embedded.views["catalog"]["g_I"]
    titles = F.normalize(embedded.title_embeds, dim=-1)
    relevance = products[:, None] == torch.arange(len(titles))[None, :]
    i2t = retrieval_scores(image @ titles.T, relevance, k_values)
    t2i = retrieval_scores(titles @ image.T, relevance.T.contiguous(), k_values)
    return {"image_to_text": pick_at_k(i2t, "r", k_values), "text_to_image": pick_at_k(t2i, "r", k_values)}


def _gallery(embedded: EmbeddedSplit) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The retrieval gallery: catalog images embedded with their titles (image + title view)."""
    products, sources = _products_and_sources(embedded, "catalog")
    return embedded.views["catalog"]["image+title"], products, sources


def product_retrieval(embedded: EmbeddedSplit, k_values: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """Table 2: customer-image queries (image view) against the catalog gallery of every *other* source.

    Coarse: a gallery item matches when it has the query's category (mAP@K). Fine-grained: only when it is the
    same product (R@K and mAP@K)."""
    gallery, gallery_products, gallery_sources = _gallery(embedded)
    query_products, query_sources = _products_and_sources(embedded, "customer")
    scores = embedded.views["customer"]["image"] @ gallery.T
    valid = _other_source_mask(query_sources, gallery_sources)
    categories = embedded.split.categories
    same_category = torch.tensor(
        [[categories[q] == categories[g] for g in gallery_products.tolist()] for q in query_products.tolist()]
    )
    coarse = retrieval_scores(scores, same_category, k_values, valid)
    fine = retrieval_scores(scores, query_products[:, None] == gallery_products[None, :], k_values, valid)
    return {
        "coarse": pick_at_k(coarse, "map", k_values),
        "fine_grained": {**pick_at_k(fine, "r", k_values), **pick_at_k(fine, "map", k_values)},
        "num_queries": len(query_products),
        "queries_without_match": fine["queries_without_match"],
    }


def instance_level_retrieval(embedded: EmbeddedSplit, k_values: Sequence[int] = (10, 50)) -> dict[str, Any]:
    """Table 3: ad images showing several products; every product in the ad that is in the gallery is a match.

    The ad is embedded once, with its image view (instance mode: h prompted with the ad's own g_I; global mode:
    g_I), and ranked against the catalog gallery of the other sources. Products in an ad that are not in this
    split's gallery (distractors from another split) cannot be retrieved; they are counted, not scored."""
    gallery, gallery_products, gallery_sources = _gallery(embedded)
    split = embedded.split
    product_index = {product_id: i for i, product_id in enumerate(split.product_ids)}
    relevance, outside = [], 0
    for i in embedded.indices["ad"]:
        # The ad's own product is in it even where a dataset lists no boxes.
        pictured = {split.product_ids[split.images[i].product], *split.images[i].box_product_ids}
        in_ad = {product_index[p] for p in pictured if p in product_index}
        outside += len(pictured) - len(in_ad)
        relevance.append([p in in_ad for p in gallery_products.tolist()])
    _, query_sources = _products_and_sources(embedded, "ad")
    valid = _other_source_mask(query_sources, gallery_sources)
    scores = embedded.views["ad"]["image"] @ gallery.T
    results = retrieval_scores(scores, torch.tensor(relevance), k_values, valid)
    return {
        "instance_level": {**pick_at_k(results, "map", k_values), **pick_at_k(results, "mar", k_values)},
        "num_queries": len(relevance),
        "queries_without_match": results["queries_without_match"],
        "ad_products_outside_split": outside,
    }


def visual_grounding(
    model: EclipModel,
    processor: EclipProcessor,
    split: CatalogueSplit,
    mode: str,
    batch_size: int = 32,
    kinds: Sequence[str] = ("customer", "ad"),
    proposals: Mapping[int, Sequence[Sequence[float]]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Table 4 left: ground each product in its customer and ad images with its title and rank candidate boxes.

    Candidates per image (the paper ranks imperfect region proposals): jittered copies of *every* object's box plus
    sliding windows (`grounding_eclip.candidate_boxes`) plus `proposals[image_index]` if given; the true boxes
    themselves are not candidates. Acc@IoU: the top box has IoU >= 0.5 / 0.7 with the product's box.

    Control (``distractor``): the same image and the same candidates, prompted with the title of another product in
    it (its second box). A model that ignores the text finds the same region for both prompts and fails it.
    ``text_conditioned``: the share of the images with a distractor where both are found (the title's top box hits
    the product and the distractor title's top box hits the distractor), with its ``chance`` level (candidates
    ranked at random: per image, the product of the shares of candidates that hit each box). ``positive_map``: how
    much of the title prompt's score map lies in the product's box, over the box's share of the image (1 = no better
    than uniform), as the mean ``mass_in_box_over_area``."""
    generator = torch.Generator().manual_seed(seed)
    samples = [i for kind in kinds for i in split.image_indices(kind) if split.images[i].boxes]  # boxed images only
    images = [split.images[i].to_pil() for i in samples]
    candidates = []
    for index, image in zip(samples, images):
        boxes = split.images[index].boxes
        per_box = [
            candidate_boxes(box, image.size, generator, window_fractions=DEFAULT_WINDOW_FRACTIONS if j == 0 else ())
            for j, box in enumerate(boxes)
        ]
        if proposals is not None and index in proposals:
            per_box.append(torch.as_tensor(proposals[index], dtype=torch.float32).reshape(-1, 4))
        candidates.append(torch.cat(per_box))

    distractors = [
        (n, split.all_titles[split.images[i].box_product_ids[1]])
        for n, i in enumerate(samples)
        if len(split.images[i].boxes) > 1 and split.images[i].box_product_ids[1] in split.all_titles
    ]
    titles = [split.titles[split.images[i].product] for i in samples]
    prompts = titles + [title for _, title in distractors]
    prompted_images = images + [images[n] for n, _ in distractors]
    maps = score_maps(model, processor, prompted_images, prompts, mode, batch_size)

    def top_box(n: int, score_map: torch.Tensor) -> list[float]:
        return candidates[n][rank_boxes(score_map, candidates[n])[0]].tolist()

    main_top = [top_box(n, maps[n]) for n in range(len(samples))]
    main_true = [split.images[index].boxes[0] for index in samples]
    control = [(n, top_box(n, maps[len(samples) + offset])) for offset, (n, _) in enumerate(distractors)]
    control_true = [split.images[samples[n]].boxes[1] for n, _ in control]
    results = {"grounding": grounding_scores(main_top, main_true)}
    if distractors:
        results["distractor"] = grounding_scores([box for _, box in control], control_true)
        found = [
            float(box_iou([main_top[n]], [main_true[n]])[0, 0] >= 0.5 and box_iou([box], [true])[0, 0] >= 0.5)
            for (n, box), true in zip(control, control_true)
        ]
        chance = [
            float((box_iou(candidates[n], [main_true[n]])[:, 0] >= 0.5).float().mean())
            * float((box_iou(candidates[n], [true])[:, 0] >= 0.5).float().mean())
            for (n, _), true in zip(control, control_true)
        ]
        results["text_conditioned"] = {
            "acc@0.5": sum(found) / len(found),
            "chance": sum(chance) / len(chance),
            "num_samples": len(found),
        }
    results["positive_map"] = {
        "mass_in_box_over_area": sum(mass_in_box_over_area(maps[n], main_true[n]) for n in range(len(samples)))
        / len(samples)
    }
    results["images_without_distractor"] = len(samples) - len(distractors)
    return results


def quick_evaluate(
    model: EclipModel, processor: EclipProcessor, dataset: CatalogueSource | str | os.PathLike, **kwargs: Any
) -> dict[str, float]:
    """The two headline numbers, for periodic evaluation during training and the model card.

    ``zero_shot_acc@1``: catalog image + title vs the category prompts (Table 1); ``fine_grained_r@1`` and
    ``fine_grained_map@10``: customer-image queries vs the catalog gallery of another source, match = same product
    (Table 2). Only catalog and customer images are embedded. ``map_mass_in_box_over_area`` (and in instance mode
    ``map_entropy_over_log_n``): `instances.positive_map_diagnostics` on the first `diagnostic_images` held-out
    customer and ad images. Keyword arguments (`split`, `batch_size`, `max_products`, `embedding`,
    `hypothesis_template`, `diagnostic_images`) are those of `quick_evaluate_with_figures`."""
    return quick_evaluate_with_figures(model, processor, dataset, num_overlays=0, tsne=False, **kwargs)[0]


def quick_evaluate_with_figures(
    model: EclipModel,
    processor: EclipProcessor,
    dataset: CatalogueSource | str | os.PathLike,
    split: str = "test",
    batch_size: int = 32,
    max_products: int | None = None,
    embedding: EmbeddingMode = "auto",
    hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
    num_overlays: int = 4,
    tsne: bool = True,
    diagnostic_images: int = 64,
) -> tuple[dict[str, float], dict[str, Image.Image]]:
    """`quick_evaluate`'s numbers, and images for experiment trackers: ``eval/grounding_<i>``, the score map of the
    first `num_overlays` customer images prompted with their titles over the image, and ``eval/tsne``, a t-SNE of the
    catalog products' image + title embeddings by category (needs matplotlib and scikit-learn, else left out)."""
    check_positive_int("batch_size", batch_size)
    catalogue = load_catalogue_split(dataset, split, max_products)
    figures = {}
    with evaluation_of(model) as model:
        mode = resolve_embedding_mode(model, embedding)
        embedded = embed_split(model, processor, catalogue, mode, QUICK_VIEWS, batch_size, hypothesis_template, None)
        diagnostics = positive_map_diagnostics(model, processor, catalogue, mode, batch_size, diagnostic_images)
        indices = catalogue.image_indices("customer")[:num_overlays]
        if indices:
            images = [catalogue.images[i].to_pil() for i in indices]
            titles = [catalogue.titles[catalogue.images[i].product] for i in indices]
            with torch.inference_mode():
                maps = score_maps(model, processor, images, titles, mode, batch_size)
            for n, (index, image, score_map) in enumerate(zip(indices, images, maps)):
                boxes = catalogue.images[index].boxes[:1]
                figures[f"eval/grounding_{n}"] = overlay_heatmap(image, score_map, boxes=boxes or None)
    if tsne:
        categories = _catalog_categories(embedded)
        try:
            figures["eval/tsne"] = figure_to_image(tsne_figure(embedded.views["catalog"]["image+title"], categories))
        except ImportError as error:  # matplotlib / scikit-learn are the eval extra
            logger.warning("no t-SNE image for the trackers: %s (pip install '.[eval]')", error)
    classification = zero_shot_classification(embedded)
    fine = product_retrieval(embedded)["fine_grained"]
    metrics = {
        "zero_shot_acc@1": classification["acc@1 (image+title)"],
        "fine_grained_r@1": fine["r@1"],
        "fine_grained_map@10": fine["map@10"],
    }
    if "mass_in_box_over_area" in diagnostics:  # not for a dataset without boxes
        metrics["map_mass_in_box_over_area"] = diagnostics["mass_in_box_over_area"]
    if "entropy_over_log_n" in diagnostics:
        metrics["map_entropy_over_log_n"] = diagnostics["entropy_over_log_n"]
    if catalogue.unreadable_images:  # counted like the training stream's skipped_corrupt_images
        metrics["skipped_unreadable_images"] = len(catalogue.unreadable_images)
    if catalogue.skipped_products:
        metrics["skipped_products"] = catalogue.skipped_products
    return metrics, figures


def evaluate_model(
    model: EclipModel,
    processor: EclipProcessor,
    dataset: CatalogueSource | str | os.PathLike,
    split: str = "test",
    batch_size: int = 32,
    embedding: EmbeddingMode = "auto",
    max_products: int | None = None,
    hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
    bf16: bool | None = None,
    grounding: bool = True,
    proposals: Mapping[int, Sequence[Sequence[float]]] | None = None,
    tsne_path: str | os.PathLike | None = None,
    seed: int = 0,
    new_scenes_dir: str | os.PathLike | None = None,
    new_scenes_max_products: int | None = None,
) -> dict[str, Any]:
    """All zero-shot evaluations of the paper on one catalogue split, as a JSON-serialisable nested dict.

    ``table1``: zero-shot classification Acc@1 per product view and image-text retrieval R@1/5; ``table2``: coarse
    mAP@1/5/10 and fine-grained R@1/5/10, mAP@1/5/10; ``table3``: instance-level mAP@10/50, mAR@10/50; ``table4``:
    grounding Acc@0.5/0.7 and the distractor control (skipped with ``grounding=False``). ``bf16=None`` uses bf16
    autocast on CUDA only. With `tsne_path`, also writes a t-SNE PNG of the catalog product embeddings (Fig. 5).

    With `new_scenes_dir` (a catalogue of the same products composed afresh, see `instances.py`), ``new_scenes``
    holds the retrieval and grounding of `instances.py` on the photos of its ``train`` products (the first
    `new_scenes_max_products`), and ``controls`` the positive-map entropy and the title-leakage control (instance
    mode)."""
    check_positive_int("batch_size", batch_size)
    catalogue = load_catalogue_split(dataset, split, max_products)
    with evaluation_of(model) as model:
        mode = resolve_embedding_mode(model, embedding)
        embedded = embed_split(model, processor, catalogue, mode, FULL_VIEWS, batch_size, hypothesis_template, bf16)
        if grounding:
            table4 = visual_grounding(model, processor, catalogue, mode, batch_size, proposals=proposals, seed=seed)
        if new_scenes_dir is not None:
            scenes = load_catalogue_split(new_scenes_dir, "train", new_scenes_max_products)
            new_scenes = {
                "num_products": len(scenes.product_ids),
                "skipped_unreadable_images": len(scenes.unreadable_images),
                "retrieval": new_scene_retrieval(model, processor, scenes, mode, batch_size, bf16),
                "grounding": visual_grounding(model, processor, scenes, mode, batch_size, seed=seed),
            }
        controls = {"positive_map": positive_map_diagnostics(model, processor, catalogue, mode, batch_size)}
        if mode == "instance":
            controls["title_leakage"] = title_leakage(model, processor, catalogue, batch_size, bf16)
    results = {
        "embedding": mode,
        "split": split,
        "num_products": len(catalogue.product_ids),
        "num_images": {kind: len(indices) for kind, indices in embedded.indices.items()},
        "skipped_unreadable_images": len(catalogue.unreadable_images),
        "skipped_products": catalogue.skipped_products,
        "table1": {"classification": zero_shot_classification(embedded), **image_text_retrieval(embedded)},
        "table2": product_retrieval(embedded),
        "table3": instance_level_retrieval(embedded),
    }
    if grounding:
        results["table4"] = table4
    if new_scenes_dir is not None:
        results["new_scenes"] = new_scenes
    results["controls"] = controls
    if tsne_path is not None:
        plot_tsne(embedded.views["catalog"]["image+title"], _catalog_categories(embedded), tsne_path, seed=seed)
    return results
