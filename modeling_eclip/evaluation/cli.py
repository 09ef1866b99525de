# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot evaluation of an exported checkpoint on a catalogue split, printed as the paper's Tables 1-4.

    python -m modeling_eclip.evaluation --model outputs/eclip-demo --dataset_name data/demo
    python -m modeling_eclip.evaluation --model outputs/eclip-demo --dataset_name data/demo \\
        --compare outputs/clip-demo --output results.json --tsne tsne.png
    python -m modeling_eclip.evaluation --model outputs/eclip-demo --dataset_name org/shop --dataset_revision v2 \\
        --image_column image --title_column name --category_column label

The dataset options are pretraining's (`--dataset_name` (alias `--data`), `--dataset_config`, `--dataset_revision`,
`--dataset_data_files`, the `--*_column` mapping): a Hub id or a local folder, in our layout or one image per row.

The model folder holds an `EclipModel` (or pretraining) checkpoint and its processor (`save_pretrained`). ECLIP
checkpoints are evaluated with instance embeddings, ITC-only checkpoints (a CLIP baseline) with global embeddings
(`--embedding auto`); see `modeling_eclip/evaluation/` for how every table is built.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor, HfArgumentParser

from ..data.arguments import DatasetArguments
from .report import format_results
from .tables import evaluate_model


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with the dataset's as a `DatasetArguments` in `args.dataset`."""
    parser = HfArgumentParser(
        DatasetArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="exported checkpoint folder (model + processor)")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--compare", nargs="+", default=[],
        help="more checkpoints (e.g. the ITC-only baseline, ablation runs) printed side by side with --model",
    )  # fmt: skip
    parser.add_argument(
        "--new-scenes",
        help="a catalogue of the same products in new photos (demo builder --scene-seed): adds retrieval and "
        "text-conditioned grounding on new scenes of training products, and the controls",
    )
    parser.add_argument("--new-scenes-max-products", type=positive_int, help="use the first N products of --new-scenes")
    parser.add_argument("--output", help="write the numbers as JSON here")
    parser.add_argument("--tsne", help="write a t-SNE PNG of the product embeddings coloured by category here")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--embedding", choices=("auto", "instance", "global"), default="auto")
    parser.add_argument("--max-products", type=positive_int, help="evaluate only the first N products of the split")
    parser.add_argument("--no-grounding", action="store_true", help="skip Table 4")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    dataset, args = parser.parse_args_into_dataclasses(argv)
    args.dataset = dataset
    return args


def evaluate_checkpoint(path: str, args: argparse.Namespace, tsne: str | None) -> dict:
    model = AutoModel.from_pretrained(path, dtype=torch.float32).to(args.device)
    processor = AutoProcessor.from_pretrained(path)
    start = time.perf_counter()
    results = evaluate_model(
        model,
        processor,
        args.dataset.catalogue_source(),
        split=args.split,
        batch_size=args.batch_size,
        embedding=args.embedding,
        max_products=args.max_products,
        grounding=not args.no_grounding,
        tsne_path=tsne,
        new_scenes_dir=args.new_scenes,
        new_scenes_max_products=args.new_scenes_max_products,
    )
    results["model"] = str(path)
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(f"evaluated {path} ({results['embedding']} embeddings) in {results['seconds']} s", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    paths = [args.model, *args.compare]
    runs = []
    for index, path in enumerate(paths):
        tsne = (
            args.tsne
            if index == 0 or args.tsne is None
            else str(Path(args.tsne).with_stem(f"{Path(args.tsne).stem}-{index}"))
        )
        runs.append(evaluate_checkpoint(path, args, tsne))
    # Exports are all called "model": a folder name shared by several paths gets its parent's name too.
    folders = [Path(path).name or path for path in paths]
    folders = [f"{Path(p).parent.name}/{f}" if folders.count(f) > 1 else f for p, f in zip(paths, folders)]
    names = [f"{folder} ({run['embedding']})" for folder, run in zip(folders, runs)]
    print(format_results(runs[0], runs[1:], names=names))
    if args.output:
        payload = runs[0] if len(runs) == 1 else {"model": runs[0], "compare": runs[1:]}
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")
    return runs[0]
