# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""What a pretraining run trains with: the `EclipForPreTraining` model (pretrained towers loaded into it), its
`EclipProcessor`, AdamW with its parameter groups (Sec. 4.1) and the stream of product pairs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from ..configuration_eclip import EclipConfig
from ..data.shard_format import list_shards
from ..data.stream import ProductPairStream, load_product_stream
from ..modeling_eclip import EclipForPreTraining, _load_tower
from ..processing_eclip import EclipImageProcessor, EclipProcessor
from .arguments import MINILM_NAME, PretrainingArguments, resolve_pretrained_path

TOWER_PREFIX = "eclip.{}_model."
VISION_PREFIX = TOWER_PREFIX.format("vision")

logger = logging.getLogger(__name__)


def build_processor(image_size: int, tokenizer_name_or_path: str | None = MINILM_NAME) -> EclipProcessor:
    """ECLIP's image processor (ViT's, on PIL) at `image_size` pixels and the tokenizer of `tokenizer_name_or_path`
    (`all-MiniLM-L6-v2`: the offline copy when installed)."""
    return EclipProcessor(
        image_processor=EclipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=AutoTokenizer.from_pretrained(resolve_pretrained_path(tokenizer_name_or_path)),
    )


def build_model_and_processor(
    args: PretrainingArguments, config: EclipConfig
) -> tuple[EclipForPreTraining, EclipProcessor, list[str]]:
    """The pretraining model, its processor and the parameter-name prefixes of the towers that start pretrained."""
    towers = {}
    for prefix, path in (("vision", args.vision_model_name_or_path), ("text", args.text_model_name_or_path)):
        path = resolve_pretrained_path(path)
        if path is not None:
            towers[prefix] = _load_tower(path)
            setattr(config, f"{prefix}_config", towers[prefix].config)
    config = EclipConfig(**config.to_dict())  # re-validate with the towers' configs
    processor = build_processor(config.image_size, args.tokenizer_name_or_path or args.text_model_name_or_path)
    check_tokenizer_fits_text_tower(processor, config)
    model = EclipForPreTraining(config)
    with torch.no_grad():
        for prefix, tower in towers.items():
            getattr(model.eclip, f"{prefix}_model").load_state_dict(tower.state_dict())
    model.copy_online_to_momentum()
    return model, processor, [TOWER_PREFIX.format(prefix) for prefix in towers]


def check_tokenizer_fits_text_tower(processor: EclipProcessor, config: EclipConfig) -> None:
    """The collator checks pixel values but cannot know the model: a tokenizer with more ids than the text tower's
    vocabulary would fail mid-run inside the embedding (a device-side assert on a GPU), so refuse it at start."""
    tokenizer_size, vocab_size = len(processor.tokenizer), config.text_config.vocab_size
    if tokenizer_size > vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer_size} ids but the text tower's vocabulary has {vocab_size}: they do not "
            "belong together; set --tokenizer_name_or_path to the text tower's tokenizer (or a text model config "
            "with a larger vocab_size)"
        )


def parameter_groups(
    model: EclipForPreTraining, args: PretrainingArguments, pretrained_prefixes: list[str]
) -> list[dict[str, Any]]:
    """AdamW groups by role (`"new"`, `"pretrained"`, `"pretrained_vision"`) x (decayed / not decayed), each named by
    its role. Biases, norms, embeddings and the temperature get no weight decay (as in CLIP); randomly initialised parts
    get `new_parameters_learning_rate`, a pretrained image tower `vision_learning_rate` when set."""
    learning_rates = {
        "new": args.peak_new_learning_rate,
        "pretrained": args.learning_rate,
        "pretrained_vision": args.vision_learning_rate or args.learning_rate,
    }
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue  # the momentum model
        role = "new"
        if name.startswith(tuple(pretrained_prefixes)):
            role = "pretrained_vision" if name.startswith(VISION_PREFIX) else "pretrained"
        decay = parameter.ndim >= 2 and "embeddings" not in name and "logit_scale" not in name
        groups.setdefault((role, decay), []).append(parameter)
    return [
        {
            "params": params,
            "name": role,
            "lr": learning_rates[role],
            "weight_decay": args.weight_decay if decay else 0.0,
        }
        for (role, decay), params in sorted(groups.items())
    ]


def make_optimizer(groups: list[dict[str, Any]], args: PretrainingArguments) -> torch.optim.AdamW:
    """AdamW (Sec. 4.1), fused when the device supports it."""
    kwargs = {"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, **kwargs)


def ensure_demo_catalogue(args: PretrainingArguments) -> None:
    """Builds the demo catalogue into `dataset_name` (a local folder) when the recipe asks for it and none is there."""
    if args.build_demo_catalogue and not list_shards(args.dataset_name, args.train_split):
        from ..demo.catalogue import build_catalogue

        logger.warning("building the demo catalogue in %s (first use)", args.dataset_name)
        build_catalogue(Path(args.dataset_name), seed=0)


def check_catalogue(args: PretrainingArguments, world_size: int) -> dict[str, int | None]:
    """Before the model is built: the dataset's columns can be read as products (`CatalogueSchemaError` naming the
    column and the option to set), the train split holds at least one full step's products when its size is known
    without reading it, and the split the run evaluates on exists, with a category column (an evaluation that fails at
    the end would come after all the compute). Returns the products per split checked (None: not known up front)."""
    source = args.catalogue_source()
    products = {args.train_split: source.num_products(args.train_split, source.layout(args.train_split))}
    needed = args.per_device_train_batch_size * world_size
    if products[args.train_split] is not None and products[args.train_split] < needed:
        raise ValueError(
            f"the {args.train_split} split of {source.describe()} has {products[args.train_split]} products; one "
            f"batch needs {needed} different products ({args.per_device_train_batch_size} per process x {world_size} "
            "process(es)), so training could never take a step: lower per_device_train_batch_size or add products"
        )
    if args.evaluate_at_end or args.eval_steps:
        splits = source.split_names()
        if args.eval_split not in splits:
            raise FileNotFoundError(
                f"eval_split {args.eval_split!r}: dataset {source.describe()} has no such split (it has "
                f"{', '.join(splits)}); convert the catalogue with a test split, name another split, "
                "or pass --evaluate_at_end false (and --eval_steps 0)"
            )
        layout = source.layout(args.eval_split, need_category=True)
        products[args.eval_split] = source.num_products(args.eval_split, layout)
        if products[args.eval_split] == 0:
            raise FileNotFoundError(f"eval_split {args.eval_split!r} of {source.describe()} has no products")
    return products


def make_stream(args: PretrainingArguments, processor: EclipProcessor, accelerator: Accelerator) -> ProductPairStream:
    """This rank's batches of product pairs: shuffled, split across processes, augmented."""
    rows = load_product_stream(
        args.catalogue_source(),
        split=args.train_split,
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    return ProductPairStream(
        rows,
        processor,
        batch_size=args.per_device_train_batch_size,
        seed=args.seed,
        num_workers=args.num_workers,
        augment=args.augment,
        anchor_kind=args.anchor_kind,
        anchor_kind_probability=args.anchor_kind_probability,
    )
