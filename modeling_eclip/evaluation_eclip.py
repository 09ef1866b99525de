# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot evaluation of an ECLIP (or ITC-only CLIP baseline) checkpoint on a product catalogue (paper Sec. 4.2).

Not remote code: this module reads catalogue shards (the format of ``modeling_eclip/data/shard_format.py``) with
pyarrow and runs the paper's evaluations, Tables 1-4, with the metrics of :mod:`modeling_eclip.metrics_eclip`.

How products are embedded (``embedding="instance"``, the default for ECLIP checkpoints, Sec. 3.4):

* image + title: the instance embedding h of the image with the title g_T(w_cls) as positive prompt;
* image only: the instance embedding h of the image prompted with its own g_I(v_cls) (the image prompt);
* title only (a control showing how much the text alone gives away): g_T(w_cls).

An ITC-only checkpoint (a CLIP baseline, all decoder loss weights 0; ``embedding="global"``) never trained its
decoder, so it is evaluated with global embeddings: image only = g_I(v_cls), title only = g_T(w_cls) and
image + title = the normalised mean of the two unit vectors, the usual CLIP fusion of an image-text pair. Image-text
retrieval uses g_I / g_T in both modes, as the paper does (Sec. 4.2.2).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image

from .data.shard_format import list_shards, require_shards
from .grounding_eclip import DEFAULT_WINDOW_FRACTIONS, candidate_boxes, grounding_score_maps, rank_boxes
from .metrics_eclip import ClassificationAccuracy, GroundingAccuracy, RetrievalMetric, rank_by_score
from .modeling_eclip import IMAGE_PROMPT, TEXT_PROMPT, EclipModel
from .pipeline_eclip import DEFAULT_HYPOTHESIS_TEMPLATE
from .processing_eclip import EclipProcessor

logger = logging.getLogger(__name__)

PRODUCT_VIEWS = ("image+title", "image", "title")
# Image kind -> instance views each evaluation needs (the decoder runs once per view).
QUICK_VIEWS = {"catalog": ("image+title",), "customer": ("image",)}
FULL_VIEWS = {"catalog": ("image+title", "image"), "customer": ("image",), "ad": ("image",)}
EmbeddingMode = Literal["auto", "instance", "global"]


# ----- reading a catalogue split -----


@dataclass
class CatalogueImage:
    """One image of a product: its product's row index, where it comes from and the objects in it."""

    product: int
    source: str
    kind: str
    data: bytes
    boxes: list[list[float]]
    box_product_ids: list[str]

    def to_pil(self) -> Image.Image:
        return Image.open(io.BytesIO(self.data)).convert("RGB")


@dataclass
class CatalogueSplit:
    """The products of one split and all their images, plus the titles of every product of the catalogue (boxes in
    ad and customer images may show products of another split)."""

    product_ids: list[str]
    titles: list[str]
    categories: list[str]
    images: list[CatalogueImage]
    all_titles: dict[str, str] = field(default_factory=dict)

    @property
    def category_names(self) -> list[str]:
        return sorted(set(self.categories))

    def image_indices(self, kind: str) -> list[int]:
        return [index for index, image in enumerate(self.images) if image.kind == kind]


def load_catalogue_split(
    data_dir: str | os.PathLike, split: str = "test", max_products: int | None = None
) -> CatalogueSplit:
    """Reads one split of a catalogue directory (the first `max_products` products if given)."""
    rows = pq.read_table(require_shards(data_dir, split)).to_pylist()
    if max_products is not None:
        rows = rows[:max_products]
    if not rows:
        raise ValueError(f"split {split!r} of {data_dir} has no products")
    all_titles = {}
    for other in sorted(path.name for path in Path(data_dir).iterdir() if path.is_dir()):
        if paths := list_shards(data_dir, other):
            columns = pq.read_table(paths, columns=["product_id", "title"]).to_pydict()
            all_titles.update(zip(columns["product_id"], columns["title"]))
    images = [
        CatalogueImage(
            product=index,
            source=image["source"],
            kind=image["kind"],
            data=image["image"],
            boxes=image["boxes"],
            box_product_ids=image["box_product_ids"],
        )
        for index, row in enumerate(rows)
        for image in row["images"]
    ]
    return CatalogueSplit(
        product_ids=[row["product_id"] for row in rows],
        titles=[row["title"] for row in rows],
        categories=[row["category"] for row in rows],
        images=images,
        all_titles=all_titles,
    )


# ----- embedding -----


def is_itc_only(model: EclipModel) -> bool:
    """True for a CLIP baseline: image-text contrast is the only objective, so the decoder was never trained."""
    return not model.config.uses_decoder_objectives


def resolve_embedding_mode(model: EclipModel, embedding: EmbeddingMode = "auto") -> str:
    """``"global"`` for an ITC-only model under ``"auto"``, else ``"instance"``; explicit modes are kept."""
    if embedding not in ("auto", "instance", "global"):
        raise ValueError(f"embedding must be 'auto', 'instance' or 'global', got {embedding!r}")
    if embedding == "auto":
        return "global" if is_itc_only(model) else "instance"
    return embedding


def _autocast(device: torch.device, bf16: bool | None) -> torch.autocast:
    # bf16 pays off on GPUs; on CPUs without bf16 matrix units it is slower than fp32, so "auto" means CUDA only.
    enabled = (device.type == "cuda" and torch.cuda.is_bf16_supported()) if bf16 is None else bf16
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def embed_texts(
    model: EclipModel, processor: EclipProcessor, texts: Sequence[str], batch_size: int = 32, bf16: bool | None = None
) -> torch.Tensor:
    """Unnormalised text embeddings g_T(w_cls), `(len(texts), D)`, in float32 on the CPU."""
    device = model.device
    outputs = []
    for start in range(0, len(texts), batch_size):
        inputs = processor(text=list(texts[start : start + batch_size])).to(device)
        with _autocast(device, bf16):
            embeds, _ = model.encode_text(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
        outputs.append(embeds.float().cpu())
    return torch.cat(outputs)


@dataclass
class ImageEmbeddings:
    """Unit-norm embeddings of a list of images: g_I(v_cls), and in instance mode h with the title prompt and h with
    the image prompt (Sec. 3.4)."""

    image: torch.Tensor
    instance_title: torch.Tensor | None = None
    instance_image: torch.Tensor | None = None


def _decode(model: EclipModel, patch_embeds: torch.Tensor, prompts: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """Unit-norm instance embeddings h of the positive slot (Sec. 3.4), float32 on the CPU."""
    decoded = model.decode_instances(patch_embeds, prompts, types, output_assignment_maps=False)
    return F.normalize(decoded.last_hidden_state[:, 0].float(), dim=-1).cpu()


@torch.inference_mode()
def embed_images(
    model: EclipModel,
    processor: EclipProcessor,
    images: Sequence[Image.Image],
    title_embeds: torch.Tensor | None = None,
    mode: str = "instance",
    batch_size: int = 32,
    bf16: bool | None = None,
    image_prompt: bool = True,
) -> ImageEmbeddings:
    """Embeds `images` with one image-tower pass each; in instance mode decodes twice per image from the same patch
    tokens Z: prompted with `title_embeds` (row i = the title of image i; skipped when None) and, if
    `image_prompt`, with the image's own g_I(v_cls). The decoder costs about twice the tiny image tower on a CPU,
    so callers ask only for the views they use."""
    if title_embeds is not None and len(title_embeds) != len(images):
        raise ValueError(f"title_embeds has {len(title_embeds)} rows for {len(images)} images")
    device = model.device
    global_embeds, with_title, with_image = [], [], []
    for start in range(0, len(images), batch_size):
        pixel_values = processor(images=list(images[start : start + batch_size]))["pixel_values"].to(device)
        with _autocast(device, bf16):
            image_embeds, patch_embeds, _ = model.encode_image(pixel_values)
            if mode == "instance" and image_prompt:
                types = torch.full((len(pixel_values),), IMAGE_PROMPT, device=device)
                with_image.append(_decode(model, patch_embeds, image_embeds, types))
            if mode == "instance" and title_embeds is not None:
                prompts = title_embeds[start : start + batch_size].to(device)
                types = torch.full((len(pixel_values),), TEXT_PROMPT, device=device)
                with_title.append(_decode(model, patch_embeds, prompts, types))
        global_embeds.append(F.normalize(image_embeds.float(), dim=-1).cpu())
    return ImageEmbeddings(
        image=torch.cat(global_embeds),
        instance_title=torch.cat(with_title) if with_title else None,
        instance_image=torch.cat(with_image) if with_image else None,
    )


def product_embeddings(embeds: ImageEmbeddings, title_embeds: torch.Tensor, mode: str) -> dict[str, torch.Tensor]:
    """The three product views of Table 1, ``image+title``, ``image`` and ``title``, plus the unimodal ``g_I`` used
    by image-text retrieval (unit norm, one row per image).

    `title_embeds` holds g_T(w_cls) of each image's product title. Global mode fuses image + title as the
    normalised mean of the unit image and text embeddings (module docstring)."""
    title = F.normalize(title_embeds.float(), dim=-1)
    if mode == "global":
        fused = F.normalize(embeds.image + title, dim=-1)
        return {"image+title": fused, "image": embeds.image, "title": title, "g_I": embeds.image}
    views = {"title": title, "g_I": embeds.image}
    if embeds.instance_title is not None:
        views["image+title"] = embeds.instance_title
    if embeds.instance_image is not None:
        views["image"] = embeds.instance_image
    return views


# ----- metric helpers -----


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
    source). Every query needs at least one valid match.
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
    return _metric(RetrievalMetric).compute(
        predictions=predictions, references=references, k_values=list(k_values), ndcg_k=ndcg_k
    )


def classification_scores(scores: torch.Tensor, labels: Sequence[int], top_k: Sequence[int] = (1,)) -> dict:
    """`ClassificationAccuracy` over a `(samples, classes)` score matrix."""
    rankings = rank_by_score(scores, max(top_k)).tolist()
    return _metric(ClassificationAccuracy).compute(predictions=rankings, references=list(labels), top_k=list(top_k))


# ----- the evaluations -----


@dataclass
class _Embedded:
    """Everything the tables need, embedded once."""

    split: CatalogueSplit
    mode: str
    title_embeds: torch.Tensor  # (products, D) unnormalised g_T
    category_embeds: torch.Tensor  # (categories, D) unit norm
    indices: dict[str, list[int]]  # kind -> image indices
    views: dict[str, dict[str, torch.Tensor]]  # kind -> product views (rows follow indices[kind])


def _embed_split(
    model: EclipModel,
    processor: EclipProcessor,
    split: CatalogueSplit,
    mode: str,
    kinds: Mapping[str, Sequence[str]],
    batch_size: int,
    hypothesis_template: str,
    bf16: bool | None,
) -> _Embedded:
    """Embeds the titles, the category prompts and the images of every kind in `kinds`, which maps an image kind
    to the instance views it needs (``"image+title"``, ``"image"``); global mode gets every view for free."""
    title_embeds = embed_texts(model, processor, split.titles, batch_size, bf16)
    prompts = [hypothesis_template.format(name) for name in split.category_names]
    category_embeds = F.normalize(embed_texts(model, processor, prompts, batch_size, bf16), dim=-1)
    indices, views = {}, {}
    for kind, needed in kinds.items():
        indices[kind] = split.image_indices(kind)
        if not indices[kind]:
            raise ValueError(f"the split has no {kind!r} images, needed for the evaluation")
        products = torch.tensor([split.images[i].product for i in indices[kind]])
        images = [split.images[i].to_pil() for i in indices[kind]]
        titles = title_embeds[products] if "image+title" in needed else None
        embeds = embed_images(model, processor, images, titles, mode, batch_size, bf16, "image" in needed)
        views[kind] = product_embeddings(embeds, title_embeds[products], mode)
    return _Embedded(split, mode, title_embeds, category_embeds, indices, views)


def _products_and_sources(embedded: _Embedded, kind: str) -> tuple[torch.Tensor, list[str]]:
    images = [embedded.split.images[i] for i in embedded.indices[kind]]
    return torch.tensor([image.product for image in images]), [image.source for image in images]


def _other_source_mask(query_sources: Sequence[str], gallery_sources: Sequence[str]) -> torch.Tensor:
    return torch.tensor([[q != g for g in gallery_sources] for q in query_sources], dtype=torch.bool)


def zero_shot_classification(embedded: _Embedded) -> dict[str, float]:
    """Table 1 left: Acc@1 of catalog images against the category prompts, per product view."""
    products, _ = _products_and_sources(embedded, "catalog")
    category_index = {name: i for i, name in enumerate(embedded.split.category_names)}
    labels = [category_index[embedded.split.categories[p]] for p in products.tolist()]
    results = {}
    for view in [view for view in PRODUCT_VIEWS if view in embedded.views["catalog"]]:
        embeds = embedded.views["catalog"][view]
        results[f"acc@1 ({view})"] = classification_scores(embeds @ embedded.category_embeds.T, labels)["acc@1"]
    return results


def image_text_retrieval(embedded: _Embedded, k_values: Sequence[int] = (1, 5)) -> dict[str, dict[str, float]]:
    """Table 1 right: catalog images g_I vs product titles g_T, both directions (an image matches its title; a
    title matches every catalog image of its product)."""
    products, _ = _products_and_sources(embedded, "catalog")
    image = embedded.views["catalog"]["g_I"]
    titles = F.normalize(embedded.title_embeds, dim=-1)
    relevance = products[:, None] == torch.arange(len(titles))[None, :]
    i2t = retrieval_scores(image @ titles.T, relevance, k_values)
    t2i = retrieval_scores(titles @ image.T, relevance.T.contiguous(), k_values)
    return {"image_to_text": _pick(i2t, "r", k_values), "text_to_image": _pick(t2i, "r", k_values)}


def _pick(results: dict[str, float], prefix: str, k_values: Sequence[int]) -> dict[str, float]:
    return {f"{prefix}@{k}": results[f"{prefix}@{k}"] for k in k_values}


def _gallery(embedded: _Embedded) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The retrieval gallery: catalog images embedded with their titles (image + title view)."""
    products, sources = _products_and_sources(embedded, "catalog")
    return embedded.views["catalog"]["image+title"], products, sources


def product_retrieval(embedded: _Embedded, k_values: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
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
        "coarse": _pick(coarse, "map", k_values),
        "fine_grained": {**_pick(fine, "r", k_values), **_pick(fine, "map", k_values)},
        "num_queries": len(query_products),
    }


def instance_level_retrieval(embedded: _Embedded, k_values: Sequence[int] = (10, 50)) -> dict[str, Any]:
    """Table 3: ad images showing several products; every product in the ad that is in the gallery is a match.

    The ad is embedded once, with its image view (instance mode: h prompted with the ad's own g_I; global mode:
    g_I), and ranked against the catalog gallery of the other sources. Products in an ad that are not in this
    split's gallery (distractors from another split) cannot be retrieved; they are counted, not scored."""
    gallery, gallery_products, gallery_sources = _gallery(embedded)
    split = embedded.split
    product_index = {product_id: i for i, product_id in enumerate(split.product_ids)}
    relevance, outside = [], 0
    for i in embedded.indices["ad"]:
        in_ad = {product_index[p] for p in split.images[i].box_product_ids if p in product_index}
        outside += len(set(split.images[i].box_product_ids)) - len(in_ad)
        relevance.append([p in in_ad for p in gallery_products.tolist()])
    _, query_sources = _products_and_sources(embedded, "ad")
    valid = _other_source_mask(query_sources, gallery_sources)
    scores = embedded.views["ad"]["image"] @ gallery.T
    results = retrieval_scores(scores, torch.tensor(relevance), k_values, valid)
    return {
        "instance_level": {**_pick(results, "map", k_values), **_pick(results, "mar", k_values)},
        "num_queries": len(relevance),
        "ad_products_outside_split": outside,
    }


def _unwrap(model: torch.nn.Module) -> EclipModel:
    # EclipForPreTraining keeps the inference model as `.eclip`; training code may pass either.
    return getattr(model, "eclip", model)


class _EvalMode:
    """Puts the model in eval mode and restores its training flag afterwards (quick_evaluate runs mid-training)."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def quick_evaluate(
    model: EclipModel,
    processor: EclipProcessor,
    data_dir: str | os.PathLike,
    split: str = "test",
    batch_size: int = 32,
    max_products: int | None = None,
    embedding: EmbeddingMode = "auto",
    hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
) -> dict[str, float]:
    """The two headline numbers, for periodic evaluation during training and the model card.

    ``zero_shot_acc@1``: catalog image + title vs the category prompts (Table 1); ``fine_grained_r@1`` and
    ``fine_grained_map@10``: customer-image queries vs the catalog gallery of another source, match = same product
    (Table 2). Only catalog and customer images are embedded."""
    model = _unwrap(model)
    mode = resolve_embedding_mode(model, embedding)
    catalogue = load_catalogue_split(data_dir, split, max_products)
    with _EvalMode(model):
        embedded = _embed_split(model, processor, catalogue, mode, QUICK_VIEWS, batch_size, hypothesis_template, None)
    classification = zero_shot_classification(embedded)
    fine = product_retrieval(embedded)["fine_grained"]
    return {
        "zero_shot_acc@1": classification["acc@1 (image+title)"],
        "fine_grained_r@1": fine["r@1"],
        "fine_grained_map@10": fine["map@10"],
    }


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
    `grounding_eclip.grounding_score_maps`), so its patch tokens go through the trained image projection instead."""
    side = model.config.num_patches_per_side
    maps = []
    for start in range(0, len(images), batch_size):
        batch = list(images[start : start + batch_size])
        inputs = processor(images=batch, text=list(texts[start : start + batch_size])).to(model.device)
        _, _, vision_outputs = model.encode_image(inputs["pixel_values"])
        patches = F.normalize(model.visual_projection(vision_outputs.last_hidden_state[:, 1:]), dim=-1)
        text = F.normalize(model.encode_text(inputs["input_ids"], inputs["attention_mask"])[0], dim=-1)
        grids = torch.einsum("bnd,bd->bn", patches, text).reshape(-1, 1, side, side).float()
        for image, grid in zip(batch, grids):
            width, height = image.size
            maps.append(F.interpolate(grid[None], size=(height, width), mode="bilinear")[0, 0].cpu())
    return maps


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
    it (its second box). A model that ignores the text finds the same region for both prompts and fails it."""
    generator = torch.Generator().manual_seed(seed)
    samples = [i for kind in kinds for i in split.image_indices(kind)]
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
    if mode == "instance":
        maps = grounding_score_maps(model, processor, prompted_images, texts=prompts, batch_size=batch_size)
    else:
        maps = global_score_maps(model, processor, prompted_images, prompts, batch_size)
    main_top, main_true = [], []
    for n, index in enumerate(samples):
        main_top.append(candidates[n][rank_boxes(maps[n], candidates[n])[0]].tolist())
        main_true.append(split.images[index].boxes[0])
    control_top, control_true = [], []
    for offset, (n, _) in enumerate(distractors):
        score_map = maps[len(samples) + offset]
        control_top.append(candidates[n][rank_boxes(score_map, candidates[n])[0]].tolist())
        control_true.append(split.images[samples[n]].boxes[1])
    results = {"grounding": _metric(GroundingAccuracy).compute(predictions=main_top, references=main_true)}
    if distractors:
        results["distractor"] = _metric(GroundingAccuracy).compute(predictions=control_top, references=control_true)
    results["images_without_distractor"] = len(samples) - len(distractors)
    return results


def evaluate_model(
    model: EclipModel,
    processor: EclipProcessor,
    data_dir: str | os.PathLike,
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
) -> dict[str, Any]:
    """All zero-shot evaluations of the paper on one catalogue split, as a JSON-serialisable nested dict.

    ``table1``: zero-shot classification Acc@1 per product view and image-text retrieval R@1/5; ``table2``: coarse
    mAP@1/5/10 and fine-grained R@1/5/10, mAP@1/5/10; ``table3``: instance-level mAP@10/50, mAR@10/50; ``table4``:
    grounding Acc@0.5/0.7 and the distractor control (skipped with ``grounding=False``). ``bf16=None`` uses bf16
    autocast on CUDA only. With `tsne_path`, also writes a t-SNE PNG of the catalog product embeddings (Fig. 5)."""
    model = _unwrap(model)
    mode = resolve_embedding_mode(model, embedding)
    catalogue = load_catalogue_split(data_dir, split, max_products)
    with _EvalMode(model):
        embedded = _embed_split(model, processor, catalogue, mode, FULL_VIEWS, batch_size, hypothesis_template, bf16)
        if grounding:
            table4 = visual_grounding(model, processor, catalogue, mode, batch_size, proposals=proposals, seed=seed)
    results = {
        "embedding": mode,
        "split": split,
        "num_products": len(catalogue.product_ids),
        "num_images": {kind: len(indices) for kind, indices in embedded.indices.items()},
        "table1": {"classification": zero_shot_classification(embedded), **image_text_retrieval(embedded)},
        "table2": product_retrieval(embedded),
        "table3": instance_level_retrieval(embedded),
    }
    if grounding:
        results["table4"] = table4
    if tsne_path is not None:
        products, _ = _products_and_sources(embedded, "catalog")
        categories = [catalogue.categories[p] for p in products.tolist()]
        plot_tsne(embedded.views["catalog"]["image+title"], categories, tsne_path, seed=seed)
    return results


def plot_tsne(
    embeddings: torch.Tensor, labels: Sequence[str], path: str | os.PathLike, seed: int = 0, title: str | None = None
) -> None:
    """Saves a 2-D t-SNE (scikit-learn) of `embeddings` coloured by `labels` as a PNG (paper Fig. 5)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    if len(embeddings) != len(labels) or len(embeddings) < 3:
        raise ValueError(f"t-SNE needs >= 3 embeddings with one label each, got {len(embeddings)} and {len(labels)}")
    points = TSNE(
        n_components=2, perplexity=min(30.0, (len(embeddings) - 1) / 3), init="pca", random_state=seed
    ).fit_transform(embeddings.float().numpy())
    names = sorted(set(labels))
    colours, markers = plt.get_cmap("tab10").colors, "os^vDP*X"
    figure, axis = plt.subplots(figsize=(8, 6), dpi=100)
    for index, name in enumerate(names):
        chosen = [i for i, label in enumerate(labels) if label == name]
        # 10 colours x 8 markers keep up to 80 categories apart.
        style = {"color": colours[index % 10], "marker": markers[index // 10 % len(markers)]}
        axis.scatter(points[chosen, 0], points[chosen, 1], s=14, label=name, **style)
    axis.set_title(title or "t-SNE of product embeddings by category")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=1 + len(names) // 30)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# ----- markdown tables in the paper's layout -----

_TABLES = (
    (
        "Table 1. Zero-shot product classification and image-text retrieval",
        [
            ("Acc@1 image+title", ("table1", "classification", "acc@1 (image+title)")),
            ("Acc@1 image", ("table1", "classification", "acc@1 (image)")),
            ("Acc@1 title (control)", ("table1", "classification", "acc@1 (title)")),
            ("I2T R@1", ("table1", "image_to_text", "r@1")),
            ("I2T R@5", ("table1", "image_to_text", "r@5")),
            ("T2I R@1", ("table1", "text_to_image", "r@1")),
            ("T2I R@5", ("table1", "text_to_image", "r@5")),
        ],
    ),
    (
        "Table 2. Zero-shot product retrieval: coarse (same category) and fine-grained (same product)",
        [(f"coarse mAP@{k}", ("table2", "coarse", f"map@{k}")) for k in (1, 5, 10)]
        + [(f"fine R@{k}", ("table2", "fine_grained", f"r@{k}")) for k in (1, 5, 10)]
        + [(f"fine mAP@{k}", ("table2", "fine_grained", f"map@{k}")) for k in (1, 5, 10)],
    ),
    (
        "Table 3. Zero-shot instance-level product retrieval (ad images, every product in the ad is a match)",
        [(f"mAP@{k}", ("table3", "instance_level", f"map@{k}")) for k in (10, 50)]
        + [(f"mAR@{k}", ("table3", "instance_level", f"mar@{k}")) for k in (10, 50)],
    ),
    (
        "Table 4 (left). Zero-shot visual grounding; control: the same images prompted with a distractor's title",
        [
            ("Acc@0.5", ("table4", "grounding", "acc@0.5")),
            ("Acc@0.7", ("table4", "grounding", "acc@0.7")),
            ("distractor Acc@0.5", ("table4", "distractor", "acc@0.5")),
            ("distractor Acc@0.7", ("table4", "distractor", "acc@0.7")),
        ],
    ),
)


def _lookup(results: Mapping[str, Any], path: Sequence[str]) -> str:
    value: Any = results
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return "-"
        value = value[key]
    return f"{100 * value:.1f}"


def format_results(
    results: Mapping[str, Any], compare: Mapping[str, Any] | None = None, names: Sequence[str] | None = None
) -> str:
    """The results of `evaluate_model` as markdown tables in the paper's layout (percent, one row per model).

    With `compare`, a second model's results get a row under the first in every table; `names` label the rows
    (default: ``model (instance)`` / ``compare (global)`` with each model's embedding mode)."""
    runs = [results] if compare is None else [results, compare]
    if names is None:
        names = [f"{name} ({run.get('embedding', '?')})" for name, run in zip(("model", "compare"), runs)]
    if len(names) != len(runs):
        raise ValueError(f"got {len(names)} names for {len(runs)} result sets")
    blocks = []
    for title, columns in _TABLES:
        if not any(_lookup(run, path) != "-" for run in runs for _, path in columns):
            continue  # e.g. Table 4 when grounding was skipped
        header = "| Method | " + " | ".join(label for label, _ in columns) + " |"
        rule = "|---|" + "---:|" * len(columns)
        rows = [
            f"| {name} | " + " | ".join(_lookup(run, path) for _, path in columns) + " |"
            for name, run in zip(names, runs)
        ]
        blocks.append("\n".join([f"**{title}**", "", header, rule, *rows]))
    return "\n\n".join(blocks) + "\n"
