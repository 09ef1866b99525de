# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""What a run hands on: the `EclipModel` + `EclipProcessor` export with its generated model card, and its upload to the
Hub (intermediate ones in the background, like Trainer's `hub_strategy`)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import yaml

from ..configuration_eclip import EclipConfig
from ..data.shard_format import read_card_metadata
from ..modeling_eclip import EclipModel
from ..pipeline_eclip import save_pretrained_with_pipeline
from ..processing_eclip import EclipProcessor
from .arguments import HUB_CHECKPOINT_DIR, MINILM_HUB_ID, MINILM_NAME, PretrainingArguments

EXPORT_DIR = "model"
# The Hub task of the card: EclipModel returns CLIP-style logits, so transformers' zero-shot-image-classification
# pipeline (and the widget) runs it; the instance-level pipeline is named in the card's text.
PIPELINE_TAG = "zero-shot-image-classification"
# quick_evaluate's numbers as model-index entries: (task type, task name, metric type, metric name).
EVAL_RESULT_FIELDS = {
    "zero_shot_acc@1": (PIPELINE_TAG, "Zero-shot product classification", "accuracy", "Acc@1 (image + title)"),
    "fine_grained_r@1": ("image-feature-extraction", "Fine-grained product retrieval", "recall", "R@1"),
    "fine_grained_map@10": ("image-feature-extraction", "Fine-grained product retrieval", "map", "mAP@10"),
}


def describe_dataset(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """What a model card says of its training data: `name`, `description`, `licence` (text), `splits` (lines) and
    `hub_id` (None for a local folder). A local catalogue is described by its dataset card (`README.md`), the
    `dataset_info.json` of our builders and its `LICENSE-DATA.md`; a Hub dataset by its id and a link to its card."""
    path = Path(name_or_path)
    if not path.is_dir():
        return {
            "name": str(name_or_path),
            "description": f"The Hub dataset [{name_or_path}](https://huggingface.co/datasets/{name_or_path}).",
            "licence": f"See the dataset card of `{name_or_path}`.",
            "splits": [],
            "hub_id": str(name_or_path),
        }
    info_path = path / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    card = read_card_metadata(path)
    licence_path = path / "LICENSE-DATA.md"
    if licence_path.is_file():
        licence = licence_path.read_text().strip()
    elif card.get("license"):
        licence = f"`{card['license']}` (dataset card). {card.get('license_details') or ''}".strip()
    else:
        licence = "Not stated next to the data."
    return {
        "name": info.get("name") or card.get("pretty_name") or path.name,
        "description": info.get("description", ""),
        "licence": licence,
        "splits": [
            f"- `{name}`: {split.get('products')} products, {split.get('images')} images"
            for name, split in info.get("splits", {}).items()
        ],
        "hub_id": None,
    }


def hub_model_ids(args: PretrainingArguments) -> list[str]:
    """The pretrained towers as Hub ids, for `base_model`: the offline MiniLM copy by its Hub id; local folders are not
    Hub models and are left out."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    ids = []
    for name in (args.vision_model_name_or_path, args.text_model_name_or_path):
        if name == MINILM_NAME:
            name = MINILM_HUB_ID
        if name is None or Path(name).exists():
            continue
        try:
            validate_repo_id(name)
        except HFValidationError:
            continue
        ids.append(name)
    return ids


def eval_results(args: PretrainingArguments, metrics: Mapping[str, float], dataset: str) -> list[Any]:
    """The final evaluation as `huggingface_hub.EvalResult`s (the card's model-index)."""
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type=task_type,
            task_name=task_name,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=args.eval_split,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=float(metrics[key]),
        )
        for key, (task_type, task_name, metric_type, metric_name) in EVAL_RESULT_FIELDS.items()
        if key in metrics
    ]


def render_model_card(
    args: PretrainingArguments,
    config: EclipConfig,
    metrics: Mapping[str, float] | None,
    summary: Mapping[str, Any],
) -> str:
    """The export's README.md: model, data and its licences, training recipe, evaluation table, intended use and
    limitations, with Hub metadata through huggingface_hub's `ModelCardData`: license, tags, `pipeline_tag`,
    `base_model` and `datasets` as Hub ids, and the final evaluation as `eval_results` (model-index)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = describe_dataset(args.dataset_name)
    dataset = data["name"]
    model_name = args.hub_model_id.split("/")[-1] if args.hub_model_id else f"eclip-{Path(args.model_config).stem}"
    metadata = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag=PIPELINE_TAG,
        tags=["eclip", "e-commerce", "zero-shot-image-classification", "product-retrieval", "custom_code"],
        base_model=hub_model_ids(args) or None,
        datasets=[data["hub_id"]] if data["hub_id"] else None,
        eval_results=eval_results(args, metrics, dataset) if metrics else None,
    )
    if metrics:
        rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items()))
        evaluation = (
            f"Held-out products (`{args.eval_split}` split of `{args.dataset_name}`), step {summary.get('step')}:"
            f"\n\n| metric | value |\n|---|---|\n{rows}"
        )
    else:
        evaluation = "Not evaluated in this run (`evaluate_at_end` was off or the run stopped early)."
    recipe = yaml.safe_dump(dataclasses.asdict(args), sort_keys=True).strip()
    vision, text = config.vision_config, config.text_config
    body = f"""# ECLIP ({Path(args.model_config).stem})

ECLIP (*Learning Instance-Level Representation for Large-Scale Multi-Modal Pretraining in E-commerce*, CVPR 2023):
an image tower, a text tower and an instance decoder whose prompted query gathers the patch tokens of the product a
prompt describes. Pretrained with `python -m modeling_eclip.training` of ECLIP for transformers.

## Model

- Image tower: {vision.model_type}, hidden size {vision.hidden_size}, {vision.num_hidden_layers} layers, \
{config.image_size} px, patch {config.patch_size} (initialised from `{args.vision_model_name_or_path or "random"}`)
- Text tower: {text.model_type}, hidden size {text.hidden_size}, {text.num_hidden_layers} layers \
(initialised from `{args.text_model_name_or_path or "random"}`)
- Joint dimension D = {config.projection_dim}; decoder: {config.decoder_config.num_hidden_layers} blocks, \
{config.decoder_config.num_queries} instance queries
- Objectives (weights): ITC {config.itc_loss_weight}, inter {config.inter_loss_weight}, ITM {config.itm_loss_weight}, \
intra {config.intra_loss_weight}, entropy {config.entropy_loss_weight}

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{args.hub_model_id or EXPORT_DIR}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{args.hub_model_id or EXPORT_DIR}", trust_remote_code=True)
```

## Training data

`{dataset}`: {data["description"]}

{chr(10).join(data["splits"])}

### Data licences

{data["licence"]}

## Training recipe

{summary.get("step")} optimiser steps of {summary.get("global_batch_size")} products on \
{summary.get("world_size")} process(es) ({summary.get("device")}), {summary.get("train_seconds", 0.0):.0f} s, \
{summary.get("samples_per_second", 0.0):.1f} samples/s; {summary.get("skipped_nonfinite", 0)} batches skipped for \
non-finite losses. AdamW, linear warm-up then linear decay (Sec. 4.1).

```yaml
{recipe}
```

## Evaluation

{evaluation}

## Intended use

Research on instance-level product representations: zero-shot product classification, product and image-text
retrieval, and box-free grounding of a described product in an image, on data like the training data.

## Limitations

- Trained on {summary.get("train_products", "a small number of")} products: the model knows only those product kinds
  and the artwork styles of its data; expect far lower accuracy on real photographs or other categories.
- Titles are English; the model inherits the biases of its text tower and of its training catalogue.
- Not for decisions about people, and not a safety or quality inspection system.
"""
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}"))


def export_pretrained(
    model: EclipModel, processor: EclipProcessor, save_directory: str | os.PathLike, model_card: str
) -> Path:
    """Saves the inference model and processor with `save_pretrained` (safetensors, `auto_map` and the code for
    `trust_remote_code`, with the zero-shot pipeline entry) and the model card."""
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    save_pretrained_with_pipeline(model, processor, save_directory)
    (save_directory / "README.md").write_text(model_card)
    return save_directory


def stage_for_hub(export_dir: Path, staging: Path, checkpoint: Path | None = None) -> Path:
    """The folder one Hub commit uploads: the export (linked, not copied, unless it is `staging` already) and, with a
    checkpoint, that checkpoint as `last-checkpoint/` (hard links, so rotation may delete the checkpoint while it
    uploads)."""
    if Path(export_dir) != Path(staging):
        shutil.rmtree(staging, ignore_errors=True)
        _link_tree(Path(export_dir), Path(staging))
    if checkpoint is not None:
        _link_tree(Path(checkpoint), Path(staging) / HUB_CHECKPOINT_DIR)
    return Path(staging)


def _link_tree(source: Path, target: Path) -> None:
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not supported
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


class HubPusher:
    """Uploads exports to a Hub repository with `huggingface_hub` (created on first use).

    `push_checkpoint` uploads in the background (`upload_folder(run_as_future=True)`), like Trainer's `hub_strategy`:
    training goes on, and a checkpoint whose predecessor is still uploading is skipped rather than queued.
    `push_final` waits for the background upload, then uploads the final export and returns when it is on the Hub.
    Both take a staged folder (`stage_for_hub`), delete it once uploaded, and replace the repository's
    `last-checkpoint/` when the folder has one. `api` is an `HfApi` (tests pass a stand-in).
    """

    def __init__(self, repo_id: str, private: bool = False, api: Any = None) -> None:
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi()
        self.api = api
        self.repo_id = repo_id
        self.api.create_repo(repo_id, private=private, exist_ok=True)
        self._in_flight: tuple[Future, Path] | None = None
        self.skipped = 0

    def busy(self) -> bool:
        return self._in_flight is not None and not self._in_flight[0].done()

    def push_checkpoint(self, folder: Path, step: int) -> None:
        """Starts a background upload of `folder`, which is deleted once uploaded (call when not `busy()`)."""
        self._finish()
        future = self.api.upload_folder(
            repo_id=self.repo_id,
            folder_path=str(folder),
            commit_message=f"Training in progress, step {step}",
            run_as_future=True,
            **self._replace_checkpoint(folder),
        )
        self._in_flight = (future, folder)

    def push_final(self, folder: Path) -> None:
        self._finish()
        try:
            self.api.upload_folder(
                repo_id=self.repo_id,
                folder_path=str(folder),
                commit_message="End of training",
                **self._replace_checkpoint(folder),
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _replace_checkpoint(folder: Path) -> dict[str, Any]:
        """A pushed checkpoint replaces the previous one whole (files it no longer has are deleted)."""
        return {"delete_patterns": f"{HUB_CHECKPOINT_DIR}/*"} if (Path(folder) / HUB_CHECKPOINT_DIR).is_dir() else {}

    def _finish(self) -> None:
        if self._in_flight is not None:
            future, folder = self._in_flight
            self._in_flight = None
            try:
                future.result()
            finally:
                shutil.rmtree(folder, ignore_errors=True)
