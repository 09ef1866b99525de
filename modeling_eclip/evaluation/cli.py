# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot evaluation of an exported checkpoint on a catalogue split, printed as the paper's Tables 1-4.

    python -m modeling_eclip.evaluation --model outputs/eclip-demo --data data/demo
    python -m modeling_eclip.evaluation --model outputs/eclip-demo --data data/demo --compare outputs/clip-demo \\
        --output results.json --tsne tsne.png

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
from transformers import AutoModel, AutoProcessor

from .report import format_results
from .tables import evaluate_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="exported checkpoint folder (model + processor)")
    parser.add_argument("--data", required=True, help="catalogue folder in the demo catalogue's shard format")
    parser.add_argument("--split", default="test")
    parser.add_argument("--compare", help="a second checkpoint (e.g. the ITC-only baseline) printed side by side")
    parser.add_argument("--output", help="write the numbers as JSON here")
    parser.add_argument("--tsne", help="write a t-SNE PNG of the product embeddings coloured by category here")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--embedding", choices=("auto", "instance", "global"), default="auto")
    parser.add_argument("--max-products", type=int, help="evaluate only the first N products of the split")
    parser.add_argument("--no-grounding", action="store_true", help="skip Table 4")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def evaluate_checkpoint(path: str, args: argparse.Namespace, tsne: str | None) -> dict:
    model = AutoModel.from_pretrained(path, dtype=torch.float32).to(args.device)
    processor = AutoProcessor.from_pretrained(path)
    start = time.perf_counter()
    results = evaluate_model(
        model,
        processor,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        embedding=args.embedding,
        max_products=args.max_products,
        grounding=not args.no_grounding,
        tsne_path=tsne,
    )
    results["model"] = str(path)
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(f"evaluated {path} ({results['embedding']} embeddings) in {results['seconds']} s", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = evaluate_checkpoint(args.model, args, args.tsne)
    compare = None
    if args.compare:
        tsne = None if args.tsne is None else str(Path(args.tsne).with_stem(Path(args.tsne).stem + "-compare"))
        compare = evaluate_checkpoint(args.compare, args, tsne)
    names = [Path(args.model).name or args.model] + ([Path(args.compare).name or args.compare] if compare else [])
    names = [f"{name} ({run['embedding']})" for name, run in zip(names, [results, compare])]
    print(format_results(results, compare, names=names))
    if args.output:
        payload = results if compare is None else {"model": results, "compare": compare}
        Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")
    return results
