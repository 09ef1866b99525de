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
from ..modeling_eclip import EclipModel
from ..pipeline_eclip import save_pretrained_with_pipeline
from ..processing_eclip import EclipProcessor
from .arguments import PretrainingArguments

EXPORT_DIR = "model"


def read_dataset_info(data_dir: str | os.PathLike) -> dict[str, Any]:
    """The catalogue's `dataset_info.json` (name, description, split sizes), or {} when it has none."""
    path = Path(data_dir) / "dataset_info.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def render_model_card(
    args: PretrainingArguments,
    config: EclipConfig,
    metrics: Mapping[str, float] | None,
    summary: Mapping[str, Any],
) -> str:
    """The export's README.md: model, data and its licences, training recipe, evaluation table, intended use and
    limitations, with Hub metadata (huggingface_hub `ModelCardData`)."""
    from huggingface_hub import ModelCard, ModelCardData

    data_dir = Path(args.data_dir)
    data_info = read_dataset_info(data_dir)
    licence_path = data_dir / "LICENSE-DATA.md"
    licence = licence_path.read_text().strip() if licence_path.is_file() else "Not stated next to the data."
    splits = data_info.get("splits", {})
    data_lines = [
        f"- `{name}`: {split.get('products')} products, {split.get('images')} images" for name, split in splits.items()
    ]
    metadata = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        tags=["eclip", "e-commerce", "zero-shot-classification", "product-retrieval", "custom_code"],
        base_model=[p for p in (args.text_model_name_or_path, args.vision_model_name_or_path) if p] or None,
    )
    if metrics:
        rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items()))
        evaluation = (
            f"Held-out products (`{args.eval_split}` split of `{args.data_dir}`), step {summary.get('step')}:"
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

`{data_info.get("name", args.data_dir)}`: {data_info.get("description", "")}

{chr(10).join(data_lines)}

### Data licences

{licence}

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


class HubPusher:
    """Uploads exports to a Hub repository with `huggingface_hub` (created on first use).

    `push_checkpoint` uploads in the background (`upload_folder(run_as_future=True)`), like Trainer's `hub_strategy`:
    training goes on, and a checkpoint whose predecessor is still uploading is skipped rather than queued.
    `push_final` waits for the background upload, then uploads the final export and returns when it is on the Hub.
    `api` is an `HfApi` (tests pass a stand-in).
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
        )
        self._in_flight = (future, folder)

    def push_final(self, folder: Path) -> None:
        self._finish()
        self.api.upload_folder(repo_id=self.repo_id, folder_path=str(folder), commit_message="End of training")

    def _finish(self) -> None:
        if self._in_flight is not None:
            future, folder = self._in_flight
            self._in_flight = None
            try:
                future.result()
            finally:
                shutil.rmtree(folder, ignore_errors=True)
