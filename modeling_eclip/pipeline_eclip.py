# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""`pipeline("zero-shot-product-classification")`: zero-shot product categories from ECLIP instance embeddings; and
`pipeline("object-detection")` on a detection checkpoint, with the package's image decoder.

The zero-shot pipeline is registered with transformers' pipeline registry when `modeling_eclip` is imported, and saved
next to a checkpoint by `save_pretrained_with_pipeline`, so `pipeline(model=checkpoint_dir, trust_remote_code=True)`
works where this package is not installed. The object-detection one is named in the `custom_pipelines` of every
`EclipForObjectDetection` checkpoint (`EclipForObjectDetection.save_pretrained`), never in the registry: it would
replace transformers' pipeline for every other model. Remote-code safe: imports only torch, transformers and sibling
modules.
"""

import os
import string
import types
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import ObjectDetectionPipeline, Pipeline, PreTrainedModel, ProcessorMixin

from .processing_eclip import EclipProcessor, check_model_inputs, check_texts, to_rgb_image

PIPELINE_TASK = "zero-shot-product-classification"
# Category prompts in the style of CLIP's zero-shot classification (Sec. 4.2.1 follows CLIP).
DEFAULT_HYPOTHESIS_TEMPLATE = "a photo of a {}."
# Category prompts go through the text tower in chunks of this many, so large category sets fit in memory.
LABEL_CHUNK_SIZE = 256


class ZeroShotProductClassificationPipeline(Pipeline):
    r"""
    Zero-shot product classification with ECLIP (paper Sec. 3.4 and 4.2.1).

    A product is an image with an optional title. With a title, the product embedding is the instance embedding h of
    the image prompted by the title (Sec. 3.4); without one, the image prompts itself (an image prompt). It is
    compared by cosine similarity, scaled by the model's learned 1/tau, with the text embeddings g_T(w_cls) of the
    category prompts `hypothesis_template.format(label)`; the scores are a softmax over the labels. Category
    embeddings are computed once per call and shared by every image of the call.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> classifier = pipeline(model="path/to/eclip-checkpoint", trust_remote_code=True)
    >>> classifier("shoe.jpg", titles="red leather running shoe", candidate_labels=["shoes", "bags", "watches"])
    [{'score': 0.91, 'label': 'shoes'}, {'score': 0.06, 'label': 'bags'}, {'score': 0.03, 'label': 'watches'}]
    >>> # streaming over a dataset, as with the stock image pipelines
    >>> from transformers.pipelines.pt_utils import KeyDataset
    >>> for scores in classifier(KeyDataset(dataset, "image"), candidate_labels=["shoes", "bags"], batch_size=8): ...
    ```
    """

    # The checkpoint's EclipProcessor when it loads, else its tokenizer and image processor; `processor=` wins.
    _load_processor = None
    _load_image_processor = None
    _load_feature_extractor = False
    _load_tokenizer = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        processor = self.processor
        if processor is not None and getattr(processor, "tokenizer", None) is not None:
            self.tokenizer, self.image_processor = processor.tokenizer, processor.image_processor
        if self.tokenizer is None or self.image_processor is None:
            raise ValueError(
                f"The {PIPELINE_TASK} pipeline needs a processor=, or both a tokenizer= and an image_processor=."
            )
        # One place for ECLIP's input conventions (no centre crop, 55 text tokens, image decoding with named errors):
        # the processor (a remote-code EclipProcessor is another class, so it is recognised by its parts).
        if processor is not None and hasattr(processor, "image_processor") and hasattr(processor, "model_input_names"):
            self.eclip_processor = processor
        else:
            self.eclip_processor = EclipProcessor(image_processor=self.image_processor, tokenizer=self.tokenizer)

    def __call__(
        self,
        images: Any,
        candidate_labels: Sequence[str] | None = None,
        titles: str | Sequence[str] | None = None,
        hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
        top_k: int | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """
        Classify one product or a list of products.

        Args:
            images (`PIL.Image`, `str`, `os.PathLike`, `bytes`, `np.ndarray`, a `{"image": ..., "title": ...}` dict, a
                list of them, or a generator or dataset yielding them, e.g. `KeyDataset(dataset, "image")`):
                The product images: a path is opened from disk, a URL downloaded and a base64 string decoded
                (`transformers.image_utils.load_image`). A generator or dataset is streamed: the call returns an
                iterator of results, as stock pipelines do.
            candidate_labels (`list[str]`):
                At least two distinct category names.
            titles (`str` or `list[str]`, *optional*):
                One product title per image (of a list); the title prompts the instance decoder. Without titles, every
                image prompts itself. Streams carry titles in `{"image": ..., "title": ...}` items. Titles follow
                `check_texts`: a blank title is an error (leave the title out to let the image prompt itself), and
                "[SEP]" in a title is text, not a control token.
            hypothesis_template (`str`, *optional*, defaults to `"a photo of a {}."`):
                The category prompt with exactly one `{}` field, replaced by each label.
            top_k (`int`, *optional*):
                Return only the `top_k` best labels (a positive int).
            batch_size (`int`, *optional*):
                Images per forward pass. Results do not depend on it (unless the model's `negative_query_mode` is
                `"text"`, where the other products of a batch serve as negative queries).

        Return:
            For one image, a list of `{"label": str, "score": float}` sorted by decreasing score; for a list of
            images, one such list per image; for a stream, an iterator of such lists.

        Raises:
            ValueError: for bad arguments, before any image is read; for an image that cannot be decoded, naming the
                item (`images[3] (path): ...`, or `stream item 3` for a generator or dataset). As with transformers'
                stock image pipelines, a bad image stops the call: no result is returned for a list with a corrupt
                image, and a stream stops at it. Filter unreadable images beforehand (`to_rgb_image` raises the same
                error) to classify the rest.
        """
        labels = _check_labels(candidate_labels)
        _check_template(hypothesis_template)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if isinstance(images, (types.GeneratorType, Dataset)):
            if titles is not None:
                raise ValueError(
                    "titles= needs a list of images; a generator or dataset carries titles in "
                    "{'image': ..., 'title': ...} items."
                )
            items = _named_stream(images)  # streamed lazily by Pipeline.__call__
        else:
            items = _product_items(images, titles)
        label_embeds = self.label_embeddings([hypothesis_template.format(label) for label in labels])
        return super().__call__(
            items, batch_size=batch_size, candidate_labels=labels, label_embeds=label_embeds, top_k=top_k, **kwargs
        )

    def _sanitize_parameters(self, candidate_labels=None, label_embeds=None, top_k=None, **kwargs):
        if kwargs:
            raise TypeError(f"Unexpected arguments for the {PIPELINE_TASK} pipeline: {sorted(kwargs)}.")
        forward_params = {} if label_embeds is None else {"label_embeds": label_embeds}
        postprocess_params = {} if candidate_labels is None else {"candidate_labels": candidate_labels}
        if top_k is not None:
            postprocess_params["top_k"] = top_k
        return {}, forward_params, postprocess_params

    @torch.no_grad()
    def label_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings g_T(w_cls) of the category prompts, `(num_labels, projection_dim)`."""
        chunks = []
        for start in range(0, len(prompts), LABEL_CHUNK_SIZE):
            tokens = self.eclip_processor(text=prompts[start : start + LABEL_CHUNK_SIZE])
            check_model_inputs(tokens, self.model.config)  # on the host: token ids against the model's vocabulary
            tokens = self._ensure_tensor_on_device(dict(tokens), self.device)
            chunks.append(self.model.get_text_features(**tokens, return_dict=True).pooler_output)
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    def preprocess(self, item: Any) -> dict[str, torch.Tensor]:
        item = _as_item(item)
        image = to_rgb_image(item["image"], item["name"])
        inputs = dict(self.eclip_processor(images=image, text=item["title"], return_tensors="pt"))
        check_model_inputs(inputs, self.model.config)  # on the host, so the model's forward reads no value back
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def _forward(self, model_inputs: dict[str, torch.Tensor], label_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        # Image + title: the title prompts the decoder; image only: the image prompts itself (Sec. 3.4).
        features = self.model.get_instance_features(**model_inputs, return_dict=True).pooler_output
        instance_embeds = F.normalize(features.float(), dim=-1)
        logit_scale = self.model.logit_scale.clamp(max=self.model.config.logit_scale_max).exp().float()
        return {"logits": logit_scale * instance_embeds @ label_embeds.t()}

    def postprocess(
        self, model_outputs: dict[str, torch.Tensor], candidate_labels: list[str], top_k: int | None = None
    ) -> list[dict[str, Any]]:
        scores = model_outputs["logits"][0].softmax(dim=-1)
        order = torch.argsort(scores, descending=True, stable=True)[:top_k]
        return [{"label": candidate_labels[index], "score": scores[index].item()} for index in order.tolist()]


def _check_labels(candidate_labels: Sequence[str] | None) -> list[str]:
    if candidate_labels is None or isinstance(candidate_labels, str):
        raise ValueError(f"candidate_labels must be a list of at least two category names, got {candidate_labels!r}.")
    labels = list(candidate_labels)
    if len(labels) < 2:
        raise ValueError(
            f"candidate_labels needs at least two labels (a softmax over one label is always 1), got {labels!r}."
        )
    check_texts(labels, "candidate_labels")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"candidate_labels has duplicates: {duplicates}.")
    return labels


def _check_template(template: Any) -> None:
    """A category prompt must have exactly one replacement field, `{}` (or `{0}`), for the label."""
    if not isinstance(template, str):
        raise ValueError(f"hypothesis_template must be a string with one '{{}}', got {type(template).__name__}.")
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as error:  # an unmatched brace
        raise ValueError(f"hypothesis_template {template!r} is not a format string: {error}.") from None
    if fields not in (
        [
            "",
        ],
        ["0"],
    ):
        raise ValueError(
            f"hypothesis_template must have exactly one '{{}}' field for the label, got {template!r} with fields "
            f"{['{' + field + '}' for field in fields]}; write literal braces as '{{{{' and '}}}}'."
        )


def _named_stream(stream: Any) -> Any:
    """A generator or dataset whose items carry their position (`stream item 3`) into error messages."""
    if isinstance(stream, Dataset) and hasattr(stream, "__len__"):
        return _NamedDataset(stream)
    return (_as_item(item, f"stream item {index}") for index, item in enumerate(stream))


class _NamedDataset(Dataset):
    """A sized dataset, its items named by position; still sized, so Pipeline keeps its DataLoader workers."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _as_item(self.dataset[index], f"stream item {index}")


def _as_item(item: Any, name: str = "image") -> dict[str, Any]:
    """`{"image", "title", "name"}` of one input: an image alone or a `{"image": ..., "title": ...}` dict."""
    if not isinstance(item, dict):
        return {"image": item, "title": None, "name": name}
    if "name" in item and set(item) == {"image", "title", "name"}:
        return item  # built by _product_items
    unknown = sorted(set(item) - {"image", "title"})
    if "image" not in item or unknown:
        raise ValueError(
            f"{name} must be an image or a dict with 'image' and an optional 'title', got keys {sorted(item)}."
        )
    title = item.get("title")
    if title is not None:
        check_texts(title, f"the title of {name}")
    return {"image": item["image"], "title": title, "name": name}


def _product_items(images: Any, titles: str | Sequence[str] | None) -> dict[str, Any] | list[dict[str, Any]]:
    """One `{"image", "title", "name"}` item per product (a single item for a single image), titles checked."""
    single = not isinstance(images, (list, tuple))
    images = [images] if single else list(images)
    if not images:
        raise ValueError("images is empty: pass at least one product image.")
    items = [_as_item(image, "image" if single else f"images[{index}]") for index, image in enumerate(images)]
    if titles is not None:
        titles = check_texts(titles, "titles")
        if len(titles) != len(images):
            raise ValueError(f"Got {len(images)} images but {len(titles)} titles; pass one title per image.")
        if any(item["title"] is not None for item in items):
            raise ValueError("pass titles either in titles= or in the images' {'image', 'title'} dicts, not both.")
        items = [{**item, "title": title} for item, title in zip(items, titles)]
    return items[0] if single else items


class EclipObjectDetectionPipeline(ObjectDetectionPipeline):
    r"""
    transformers' object-detection pipeline for [`EclipForObjectDetection`], decoding images as training and
    evaluation decode them (`processing_eclip.to_rgb_image`: EXIF orientation, transparency on white, 16-bit images
    scaled, bytes and arrays taken, errors naming the image) instead of `transformers.image_utils.load_image`, which
    puts transparency on black and clips 16-bit images to almost white, so the detections of a file would differ from
    those of the same image decoded by the package. URLs are read by that decoder, with its own timeout
    (`processing_eclip.DEFAULT_URL_TIMEOUT`); the `timeout=` argument of the stock pipeline is not used.

    A detection checkpoint names it in `config.json` (`custom_pipelines`), so `pipeline("object-detection",
    model=checkpoint_dir, trust_remote_code=True)` builds it, with the package installed or not; without
    `trust_remote_code=True` transformers refuses the checkpoint and says so. For a model in memory pass
    `pipeline_class=EclipObjectDetectionPipeline`.
    """

    # ECLIP detection reads no text: with a tokenizer the parent class would take the model for a LayoutLM-style
    # token classifier.
    _load_tokenizer = False

    def check_model_type(self, supported_models: Any) -> None:
        # transformers' list names its own detectors only; this pipeline is ECLIP's, so no "not supported" error log.
        if getattr(self.model.config, "model_type", None) != "eclip":
            super().check_model_type(supported_models)

    def preprocess(self, image: Any, timeout: float | None = None) -> dict[str, Any]:
        image = to_rgb_image(image)
        inputs = self.image_processor(images=[image], return_tensors="pt").to(self.dtype)
        inputs["target_size"] = torch.IntTensor([[image.height, image.width]])  # the decoded, upright image's
        return inputs


OBJECT_DETECTION_TASK = "object-detection"
# The `custom_pipelines` entry of a detection checkpoint's config.json, as `Pipeline.save_pretrained` writes one.
OBJECT_DETECTION_PIPELINE = {
    "impl": f"{EclipObjectDetectionPipeline.__module__.rsplit('.', 1)[-1]}.{EclipObjectDetectionPipeline.__name__}",
    "pt": ["AutoModelForObjectDetection"],
    "tf": [],
    "type": "image",
}


def save_pretrained_with_pipeline(
    model: PreTrainedModel, processor: ProcessorMixin, save_directory: str | os.PathLike
) -> None:
    """Saves model, processor (tokenizer and image processor), code and the pipeline entry in one folder.

    `config.json` gets `custom_pipelines = {"zero-shot-product-classification": ...}` and `pipeline_eclip.py` is copied
    next to the model code, so `pipeline(model=save_directory, trust_remote_code=True)` builds this pipeline without
    the package installed. Import `modeling_eclip` first: that registers the pipeline.
    """
    if not hasattr(ZeroShotProductClassificationPipeline, "_registered_impl"):
        raise RuntimeError(f"The {PIPELINE_TASK} pipeline is not registered: `import modeling_eclip` first.")
    pipe = ZeroShotProductClassificationPipeline(
        model=model,
        tokenizer=processor.tokenizer,
        image_processor=processor.image_processor,
        task=PIPELINE_TASK,
        device=model.device,
    )
    # Pipeline.save_pretrained writes `custom_pipelines` into the model's config; the caller's model (maybe still
    # training, its config shared with the pretraining wrapper) keeps its own config.
    had_entry, previous = hasattr(model.config, "custom_pipelines"), getattr(model.config, "custom_pipelines", None)
    try:
        pipe.save_pretrained(save_directory)
    finally:
        if had_entry:
            model.config.custom_pipelines = previous
        else:
            del model.config.custom_pipelines
    processor.save_pretrained(save_directory)


__all__ = [
    "DEFAULT_HYPOTHESIS_TEMPLATE",
    "OBJECT_DETECTION_PIPELINE",
    "OBJECT_DETECTION_TASK",
    "PIPELINE_TASK",
    "EclipObjectDetectionPipeline",
    "ZeroShotProductClassificationPipeline",
    "save_pretrained_with_pipeline",
]
