# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Reading a catalogue split and embedding it once, for every table of the evaluation (paper Sec. 4.2).

How products are embedded (``embedding="instance"``, the default for ECLIP checkpoints, Sec. 3.4):

* image + title: the instance embedding h of the image with the title g_T(w_cls) as positive prompt;
* image only: the instance embedding h of the image prompted with its own g_I(v_cls) (the image prompt);
* title only (a control showing how much the text alone gives away): g_T(w_cls).

An ITC-only checkpoint (a CLIP baseline, all decoder loss weights 0; ``embedding="global"``) never trained its
decoder, so it is evaluated with global embeddings: image only = g_I(v_cls), title only = g_T(w_cls) and
image + title = the normalised mean of the two unit vectors, the usual CLIP fusion of an image-text pair. Image-text
retrieval uses g_I / g_T in both modes, as the paper does (Sec. 4.2.2).

Any other dual encoder with CLIP's methods (`CLIPModel`, `VisionTextDualEncoderModel`, FashionCLIP-style
checkpoints: `get_image_features` / `get_text_features`, a `vision_model` and a `visual_projection`) is evaluated the
same way, with global embeddings and its own processor.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers.utils import ModelOutput

from ..data.source import CatalogueSource, image_input
from ..modeling_eclip import IMAGE_PROMPT, TEXT_PROMPT, EclipModel
from ..processing_eclip import EclipProcessor, is_blank_text, to_rgb_image

PRODUCT_VIEWS = ("image+title", "image", "title", "instance (title prompt)")
# Image kind -> instance views each evaluation needs (the decoder runs once per view).
QUICK_VIEWS = {"catalog": ("image+title",), "customer": ("image",)}
FULL_VIEWS = {"catalog": ("image+title", "image"), "customer": ("image",), "ad": ("image",)}
EmbeddingMode = Literal["auto", "instance", "global"]

logger = logging.getLogger(__name__)


def progress(iterable: Any, description: str) -> Any:
    """A tqdm bar on stderr for the loops of an evaluation (`TQDM_DISABLE=1` hides every bar)."""
    return tqdm(iterable, desc=description, leave=False, dynamic_ncols=True)


@dataclass
class CatalogueImage:
    """One image of a product: its product's row index, where it comes from and the objects in it."""

    product: int
    source: str
    kind: str
    data: bytes
    boxes: list[list[float]]
    box_product_ids: list[str]
    name: str = "image"  # "<product_id> image <i>", for error messages

    def to_pil(self) -> Image.Image:
        """The image decoded as training decodes it (`processing_eclip.to_rgb_image`: EXIF orientation applied,
        transparency on white)."""
        return to_rgb_image(self.data, self.name)


@dataclass
class CatalogueSplit:
    """The products of one split and all their images, plus the titles of every product of the catalogue (boxes in
    ad and customer images may show products of another split)."""

    product_ids: list[str]
    titles: list[str]
    categories: list[str]
    images: list[CatalogueImage]
    all_titles: dict[str, str] = field(default_factory=dict)
    unreadable_images: list[str] = field(default_factory=list)  # names of the images skipped (see load_catalogue_split)
    # Products left out: no product id, no title or no category (see load_catalogue_split).
    skipped_products: int = 0

    @property
    def category_names(self) -> list[str]:
        return sorted(set(self.categories))

    def image_indices(self, kind: str) -> list[int]:
        return [index for index, image in enumerate(self.images) if image.kind == kind]


def check_positive_int(name: str, value: Any) -> int:
    """`value` if it is an integer >= 1; otherwise a ValueError naming `name` (batch sizes, product limits)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def load_catalogue_split(
    dataset: CatalogueSource | str | os.PathLike, split: str = "test", max_products: int | None = None
) -> CatalogueSplit:
    """Reads one split of a catalogue (the first `max_products` products if given): a `CatalogueSource` (any dataset,
    with a column mapping; it needs a category column) or a local folder / Hub id in our layout.

    Every image is decoded once here, as training decodes it (`processing_eclip.to_rgb_image`); an unreadable one
    (corrupt, truncated, a decompression bomb, missing) is skipped and named in `unreadable_images`, as the training
    stream skips and counts it, so one bad file does not stop an evaluation; a product without a product id, a title or
    a category is left out and counted in `skipped_products`."""
    if max_products is not None:
        check_positive_int("max_products", max_products)
    if not isinstance(dataset, CatalogueSource):
        dataset = CatalogueSource(str(dataset))
    rows, skipped_products = [], 0
    for row in dataset.iter_products(split, need_category=True):
        if max_products is not None and len(rows) == max_products:
            break
        if not row["product_id"] or is_blank_text(row["title"] or "") or is_blank_text(row["category"] or ""):
            skipped_products += 1  # as training skips them; a product without a category cannot be classified
            continue
        rows.append(row)
    if skipped_products:
        logger.warning(
            "split %r of %s: left out %d product(s) without a product id, a title or a category",
            split,
            dataset.describe(),
            skipped_products,
        )
    if not rows:
        raise ValueError(f"split {split!r} of {dataset.describe()} has no products")
    # Titles of every product of the dataset: the grounding control prompts name the other products in an image.
    all_titles = dataset.product_values("title")
    images, unreadable = [], []
    for index, row in enumerate(rows):
        for number, image in enumerate(row["images"]):
            name = f"{row['product_id']} image {number}"
            data = image_input(image)
            try:
                if data is None:
                    raise ValueError("no image")
                to_rgb_image(data, name)
            except ValueError:
                unreadable.append(name)
                continue
            images.append(
                CatalogueImage(
                    product=index,
                    source=image["source"],
                    kind=image["kind"],
                    data=data,
                    boxes=image["boxes"],
                    box_product_ids=image["box_product_ids"],
                    name=name,
                )
            )
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (", ..." if len(unreadable) > 5 else "")
        logger.warning(
            "split %r of %s: skipped %d unreadable image(s): %s", split, dataset.describe(), len(unreadable), shown
        )
    return CatalogueSplit(
        product_ids=[row["product_id"] for row in rows],
        titles=[row["title"] for row in rows],
        categories=[row["category"] for row in rows],
        images=images,
        all_titles=all_titles,
        unreadable_images=unreadable,
        skipped_products=skipped_products,
    )


def is_eclip(model: torch.nn.Module) -> bool:
    """An ECLIP model (by `model_type`: remote-code classes are not this package's classes)."""
    return getattr(model.config, "model_type", None) == "eclip"


def is_itc_only(model: EclipModel) -> bool:
    """True for a CLIP baseline: image-text contrast is the only objective, so the decoder was never trained."""
    return not model.config.uses_decoder_objectives


def resolve_embedding_mode(model: EclipModel, embedding: EmbeddingMode = "auto") -> str:
    """``"global"`` for an ITC-only model or a CLIP-style model under ``"auto"``, else ``"instance"``; explicit
    modes are kept (``"instance"`` needs an ECLIP model)."""
    if embedding not in ("auto", "instance", "global"):
        raise ValueError(f"embedding must be 'auto', 'instance' or 'global', got {embedding!r}")
    if not is_eclip(model):
        if embedding == "instance":
            raise ValueError(
                f"embedding='instance' needs an ECLIP checkpoint; {type(model).__name__} has global embeddings only"
            )
        return "global"
    if embedding == "auto":
        return "global" if is_itc_only(model) else "instance"
    return embedding


def _pooled(output: torch.Tensor | ModelOutput) -> torch.Tensor:
    """The projected embedding of a `get_*_features` call: a tensor (transformers v4) or its `pooler_output` (v5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def text_features(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Unnormalised projected text embeddings: g_T(w_cls) of ECLIP, `get_text_features` of a CLIP-style model."""
    if is_eclip(model):
        return model.encode_text(inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids"))[0]
    accepted = inspect.signature(model.get_text_features).parameters
    return _pooled(model.get_text_features(**{k: v for k, v in inputs.items() if k in accepted}))


def image_features(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unnormalised g_I(v_cls) and, for ECLIP, the projected patch tokens Z the decoder reads (else None)."""
    if is_eclip(model):
        image_embeds, patch_embeds, _ = model.encode_image(pixel_values)
        return image_embeds, patch_embeds
    return _pooled(model.get_image_features(pixel_values=pixel_values)), None


def dense_image_features(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Patch tokens through the trained image projection, `(B, N, D)`: the dense map of a global model (CLIP's
    patch tokens go through its final LayerNorm first, as its [CLS] token does)."""
    if is_eclip(model):
        tokens = model.encode_image(pixel_values)[2].last_hidden_state[:, 1:]
    else:
        tokens = model.vision_model(pixel_values=pixel_values).last_hidden_state[:, 1:]
        post_layernorm = getattr(model.vision_model, "post_layernorm", None)
        tokens = post_layernorm(tokens) if post_layernorm is not None else tokens
    return model.visual_projection(tokens)


def patch_grid_side(num_patches: int) -> int:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"{num_patches} patch tokens do not form a square grid")
    return side


def whole_image_kwargs(processor: Any) -> dict[str, Any]:
    """Processor arguments that resize the whole image to the model's input size instead of centre-cropping it (CLIP's
    processors crop), so a score map covers the picture the boxes are drawn on."""
    image_processor = getattr(processor, "image_processor", processor)
    crop = getattr(image_processor, "crop_size", None)
    if not getattr(image_processor, "do_center_crop", False) or not crop:
        return {}
    crop = dict(crop)
    return {"do_center_crop": False, "size": {"height": crop["height"], "width": crop["width"]}}


def process(processor: Any, device: torch.device, **inputs: Any) -> Any:
    """`processor(...)` with padded, truncated text and PyTorch tensors on `device`, for ECLIP and CLIP processors."""
    text = {"padding": True, "truncation": True} if inputs.get("text") is not None else {}
    return processor(**inputs, **text, return_tensors="pt").to(device)


def _autocast(device: torch.device, bf16: bool | None) -> torch.autocast:
    # bf16 pays off on GPUs; on CPUs without bf16 matrix units it is slower than fp32, so "auto" means CUDA only.
    enabled = (device.type == "cuda" and torch.cuda.is_bf16_supported()) if bf16 is None else bf16
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def embed_texts(
    model: EclipModel, processor: EclipProcessor, texts: Sequence[str], batch_size: int = 32, bf16: bool | None = None
) -> torch.Tensor:
    """Unnormalised text embeddings g_T(w_cls), `(len(texts), D)`, in float32 on the CPU."""
    check_positive_int("batch_size", batch_size)
    device = model.device
    outputs = []
    for start in progress(range(0, len(texts), batch_size), "embedding texts"):
        inputs = process(processor, device, text=list(texts[start : start + batch_size]))
        with _autocast(device, bf16):
            embeds = text_features(model, inputs)
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
    check_positive_int("batch_size", batch_size)
    device = model.device
    global_embeds, with_title, with_image = [], [], []
    for start in progress(range(0, len(images), batch_size), "embedding images"):
        pixel_values = process(processor, device, images=list(images[start : start + batch_size]))["pixel_values"]
        with _autocast(device, bf16):
            image_embeds, patch_embeds = image_features(model, pixel_values)
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
    """The product views of Table 1, ``image+title``, ``image`` and ``title``, plus the unimodal ``g_I`` used by
    image-text retrieval and, in instance mode, ``instance (title prompt)`` (unit norm, one row per image).

    `title_embeds` holds g_T(w_cls) of each image's product title. Both modes embed a product (image + title) the same
    way: the normalised sum of its unit visual embedding and its unit title embedding. The visual embedding is g_I in
    global mode and, in instance mode, the instance embedding h prompted with the title (Sec. 3.4), which holds only
    visual information (Sec. 3.2: the prompt only decides which tokens are pooled), so the title enters ECLIP's
    product embedding twice: it picks the product out of the image, and it is fused as text. ``instance (title
    prompt)`` is that h alone."""
    title = F.normalize(title_embeds.float(), dim=-1)
    if mode == "global":
        fused = F.normalize(embeds.image + title, dim=-1)
        return {"image+title": fused, "image": embeds.image, "title": title, "g_I": embeds.image}
    views = {"title": title, "g_I": embeds.image}
    if embeds.instance_title is not None:
        views["image+title"] = F.normalize(embeds.instance_title + title, dim=-1)
        views["instance (title prompt)"] = embeds.instance_title
    if embeds.instance_image is not None:
        views["image"] = embeds.instance_image
    return views


@dataclass
class EmbeddedSplit:
    """Everything the tables need, embedded once."""

    split: CatalogueSplit
    mode: str
    title_embeds: torch.Tensor  # (products, D) unnormalised g_T
    category_embeds: torch.Tensor  # (categories, D) unit norm
    indices: dict[str, list[int]]  # kind -> image indices
    views: dict[str, dict[str, torch.Tensor]]  # kind -> product views (rows follow indices[kind])


def embed_split(
    model: EclipModel,
    processor: EclipProcessor,
    split: CatalogueSplit,
    mode: str,
    kinds: Mapping[str, Sequence[str]],
    batch_size: int,
    hypothesis_template: str,
    bf16: bool | None,
) -> EmbeddedSplit:
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
    return EmbeddedSplit(split, mode, title_embeds, category_embeds, indices, views)


@contextlib.contextmanager
def evaluation_of(model: torch.nn.Module) -> Iterator[EclipModel]:
    """The inference model of `model` (an `EclipForPreTraining` keeps it as `.eclip`) in eval mode; its training flag
    is restored afterwards (the training loop evaluates mid-run)."""
    model = getattr(model, "eclip", model)
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
