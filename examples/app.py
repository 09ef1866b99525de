# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""A Gradio product demo of an ECLIP checkpoint: Classify, Ground and Search tabs.

* **Classify**: a photo, an optional title and candidate categories -> ranked scores, from the
  `zero-shot-product-classification` pipeline (Sec. 3.4 / 4.2.1).
* **Ground**: a photo and a text (or a second photo as the prompt) -> the score-map overlay and the best box
  (`grounding_eclip`, Sec. 4.2.4).
* **Search**: a photo and/or a title -> the most similar catalogue products with their images, from a faiss index over
  the catalogue (`ProductSearchIndex`, Sec. 4.2.3), built at start-up and cached on disk.

Errors (no image, an undecodable file, empty labels) appear as a message in the page. Nothing is downloaded at
start-up: Gradio's analytics are off and its bundled assets are served locally::

    python examples/app.py --model outputs/eclip-tiny-demo/model --data data/demo     # make app
    ECLIP_MODEL=path/to/model python app.py                                           # as a Hugging Face Space
"""

import os

# Before gradio is imported: no telemetry, no version check.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse
import hashlib
import logging
import pathlib
from collections.abc import Callable
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

import modeling_eclip  # noqa: F401  (registers ECLIP with the Auto classes)
from modeling_eclip import ZeroShotProductClassificationPipeline
from modeling_eclip.data.shard_format import list_shards
from modeling_eclip.evaluation.search import EMBEDDING_COLUMN, ProductSearchIndex, load_catalogue
from modeling_eclip.grounding_eclip import candidate_boxes, grounding_score_maps, overlay_heatmap, score_boxes
from modeling_eclip.pipeline_eclip import PIPELINE_TASK
from modeling_eclip.processing_eclip import to_rgb_image

logger = logging.getLogger(__name__)

DEFAULT_MODEL = os.environ.get("ECLIP_MODEL", "outputs/eclip-tiny-demo/model")
DEFAULT_DATA = os.environ.get("ECLIP_DATA", "data/demo")
DEFAULT_CACHE = os.environ.get("ECLIP_APP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "eclip-app"))
# Candidate boxes for grounding: sliding windows of these fractions of the image (candidate_boxes' windows).
GROUND_WINDOW_FRACTIONS = (0.25, 0.375, 0.5, 0.625, 0.75)
SEARCH_RESULTS = 6


class EclipDemo:
    """The model, processor, pipeline and search index behind the app; every handler returns a status message."""

    def __init__(
        self, model_dir: str, data_dir: str | None, split: str = "test", cache_dir: str | None = DEFAULT_CACHE
    ):
        self.model = AutoModel.from_pretrained(model_dir).eval()
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.classifier = ZeroShotProductClassificationPipeline(
            model=self.model,
            processor=self.processor,
            tokenizer=self.processor.tokenizer,
            image_processor=self.processor.image_processor,
            task=PIPELINE_TASK,
        )
        self.index, self.catalogue, self.categories = None, None, []
        if data_dir is not None:
            self.catalogue = load_catalogue(data_dir, split)
            self.categories = sorted(set(self.catalogue["category"]))
            self.index = self._build_index(model_dir, data_dir, split, cache_dir)

    def _build_index(self, model_dir: str, data_dir: str, split: str, cache_dir: str | None) -> ProductSearchIndex:
        """The catalogue's image+title embeddings, from the cache when this model and catalogue were embedded
        before (keyed by the weights' and the split's data files' sizes and times), else embedded now and cached."""
        key = hashlib.sha256()
        for path in sorted([*pathlib.Path(model_dir).glob("*.safetensors"), *list_shards(data_dir, split)]):
            stat = path.stat()
            key.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        cache_file = None if cache_dir is None else pathlib.Path(cache_dir) / f"catalogue-{key.hexdigest()[:16]}.npy"
        if cache_file is not None and cache_file.is_file():
            embeddings = np.load(cache_file)
            if len(embeddings) == len(self.catalogue):
                logger.info("Catalogue embeddings from the cache %s", cache_file)
                catalogue = self.catalogue.add_column(EMBEDDING_COLUMN, list(embeddings))
                return ProductSearchIndex(catalogue, self.model, self.processor)
        index = ProductSearchIndex.build(self.model, self.processor, self.catalogue)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache_file, np.asarray(index.catalogue[EMBEDDING_COLUMN], dtype=np.float32))
        return index

    # ----- handlers: (outputs..., status markdown) -----

    def classify(self, image: Any, title: str, labels: str) -> tuple[dict[str, float] | None, str]:
        try:
            image = _require_image(image, "photo")
            candidates = [label.strip() for label in (labels or "").replace("\n", ",").split(",") if label.strip()]
            if not candidates:
                raise ValueError("Enter at least two candidate categories, separated by commas.")
            title = (title or "").strip() or None
            scores = self.classifier(image, titles=title, candidate_labels=candidates)
        except (ValueError, OSError) as error:
            return None, _error(error)
        prompt = f"the title {title!r}" if title else "the photo itself"
        best = scores[0]
        return {hit["label"]: hit["score"] for hit in scores}, (
            f"Best category: **{best['label']}** ({best['score']:.2f}); the instance was prompted by {prompt}."
        )

    def ground(self, image: Any, text: str, prompt_image: Any) -> tuple[Image.Image | None, str]:
        try:
            image = _require_image(image, "photo")
            text = (text or "").strip() or None
            if prompt_image is not None:
                prompt_image = _require_image(prompt_image, "prompt photo")
            if text is not None and prompt_image is not None:
                raise ValueError("Give either a text or a prompt photo, not both.")
            if text is None and prompt_image is None:
                raise ValueError("Enter a text (or upload a second photo) naming the product to find.")
            with torch.no_grad():
                (score_map,) = grounding_score_maps(
                    self.model,
                    self.processor,
                    [image],
                    texts=None if text is None else [text],
                    prompt_images=None if prompt_image is None else [prompt_image],
                )
            width, height = image.size
            # No true box here: the whole image stands in for it, so candidate_boxes gives its sliding windows.
            boxes = candidate_boxes(
                (0, 0, width, height),
                (width, height),
                torch.Generator().manual_seed(0),
                num_jittered=0,
                window_fractions=GROUND_WINDOW_FRACTIONS,
            )
            scores = score_boxes(score_map, boxes)
            best = int(scores.argmax())
        except (ValueError, OSError) as error:
            return None, _error(error)
        box = [round(value) for value in boxes[best].tolist()]
        prompt = f"the text {text!r}" if text is not None else "the prompt photo"
        return overlay_heatmap(image, score_map, boxes=[box]), (
            f"Best box for {prompt}: **{tuple(box)}** (x0, y0, x1, y1), score {float(scores[best]):.3f} "
            f"(mean of the map inside minus outside), out of {len(boxes)} windows."
        )

    def search(self, image: Any, title: str) -> tuple[list[tuple[Image.Image, str]], str]:
        try:
            if self.index is None:
                raise ValueError("This app was started without a catalogue (--data); search is off.")
            title = (title or "").strip() or None
            image = None if image is None else _require_image(image, "photo")
            if image is None and title is None:
                raise ValueError("Upload a photo and/or enter a title to search the catalogue.")
            hits = self.index.search(image=image, title=title, k=SEARCH_RESULTS)
        except (ValueError, OSError) as error:
            return [], _error(error)
        gallery = [
            (
                to_rgb_image(self.catalogue[hit["index"]]["image"]),
                f"{hit['title']} [{hit['category']}] {hit['score']:.3f}",
            )
            for hit in hits
        ]
        query = " + ".join(name for name, value in (("photo", image), ("title", title)) if value is not None)
        return gallery, f"Top {len(hits)} of {len(self.index)} catalogue products for the {query}."


def uploaded_image(**kwargs: Any) -> gr.Image:
    """A `gr.Image` that hands the handler the uploaded file's path undecoded: Gradio's own decoding would turn an
    undecodable upload into an internal error, the package's decoder (`to_rgb_image`) names the problem instead.
    (Overridden on the instance: Gradio writes a `.pyi` stub beside the source of every Component subclass.)"""
    component = gr.Image(type="filepath", **kwargs)
    component.preprocess = lambda payload: None if payload is None else payload.path
    return component


def _require_image(image: Any, name: str) -> Image.Image:
    """The uploaded file (a path, as the components pass it) decoded by the package's one image decoder."""
    if image is None:
        raise ValueError(f"Upload a {name} first.")
    return to_rgb_image(image, name)


def _error(error: Exception) -> str:
    return f"**Error:** {error}"


def _tab(
    name: str,
    handler: Callable[..., tuple[Any, str]],
    inputs: Callable[[], list[gr.components.Component]],
    output: Callable[[], gr.components.Component],
) -> None:
    """A tab with `inputs()` and a button on the left, a status line and `output()` on the right (built inside the
    columns, hence callables); the button runs `handler` on the inputs into (output, status). Element ids:
    ``<name>-run``, ``<name>-status`` in lower case."""
    tab_id = name.lower()
    with gr.Tab(name, id=tab_id):
        with gr.Row():
            with gr.Column():
                components = inputs()
                button = gr.Button(name, variant="primary", elem_id=f"{tab_id}-run")
            with gr.Column():
                status = gr.Markdown(elem_id=f"{tab_id}-status")
                result = output()
        button.click(handler, components, [result, status])


def build_app(demo: EclipDemo) -> gr.Blocks:
    """The three tabs; element ids (`elem_id`) are what the browser test drives."""
    default_labels = ", ".join(demo.categories)
    with gr.Blocks(title="ECLIP product demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# ECLIP product demo\nInstance-level product embeddings (ECLIP, CVPR 2023): zero-shot classification, "
            "grounding and catalogue search."
        )
        _tab(
            "Classify",
            demo.classify,
            lambda: [
                uploaded_image(label="Product photo", elem_id="classify-image"),
                gr.Textbox(label="Title (optional)", elem_id="classify-title"),
                gr.Textbox(
                    label="Candidate categories (comma-separated)",
                    value=default_labels,
                    lines=3,
                    elem_id="classify-labels",
                ),
            ],
            lambda: gr.Label(num_top_classes=5, label="Scores", elem_id="classify-scores"),
        )
        _tab(
            "Ground",
            demo.ground,
            lambda: [
                uploaded_image(label="Scene photo", elem_id="ground-image"),
                gr.Textbox(label="Product text", elem_id="ground-text"),
                uploaded_image(label="...or a photo of the product", elem_id="ground-prompt-image"),
            ],
            lambda: gr.Image(label="Score map and best box", elem_id="ground-overlay", format="png"),
        )
        _tab(
            "Search",
            demo.search,
            lambda: [
                uploaded_image(label="Query photo (optional)", elem_id="search-image"),
                gr.Textbox(label="Query title (optional)", elem_id="search-title"),
            ],
            lambda: gr.Gallery(label="Most similar products", columns=3, elem_id="search-results"),
        )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="an exported ECLIP checkpoint folder")
    parser.add_argument("--data", default=DEFAULT_DATA, help="the search catalogue (our layout); 'none': none")
    parser.add_argument("--split", default="test")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where catalogue embeddings are cached")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    data = None if args.data.lower() == "none" else args.data
    demo = EclipDemo(args.model, data, split=args.split, cache_dir=args.cache_dir)
    build_app(demo).launch(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
