# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Exports an ECLIP checkpoint's embedding paths to ONNX for serving (`modeling_eclip.serving`).

Writes `text.onnx` (g_T), `image.onnx` (g_I), `instance.onnx` (h of image + title, Sec. 3.4 with the fixed Gaussian
negatives) and `image_instance.onnx` (h of an image prompting itself), all with dynamic batch size, the processor and
`export_info.json`; `--int8` adds dynamically quantised copies. `--check-data` then compares onnxruntime with the
PyTorch model on catalogue images and titles at batch sizes 1 and 7 and prints the largest absolute differences::

    python examples/export_onnx.py --model outputs/eclip-tiny-demo/model --output outputs/eclip-tiny-demo/onnx \\
        --int8 --check-data data/demo
"""

import argparse
import json

from transformers import AutoModel, AutoProcessor

import modeling_eclip  # noqa: F401  (registers ECLIP with the Auto classes)
from modeling_eclip.evaluation.search import load_catalogue
from modeling_eclip.serving import EMBEDDING_GRAPHS, OnnxEmbedder, export_embedding_graphs
from modeling_eclip.serving.onnx_export import parity

PARITY_BATCH_SIZES = (1, 7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an exported ECLIP checkpoint folder")
    parser.add_argument("--output", required=True, help="where the ONNX graphs and the processor go")
    parser.add_argument("--graphs", nargs="+", default=list(EMBEDDING_GRAPHS), choices=list(EMBEDDING_GRAPHS))
    parser.add_argument("--int8", action="store_true", help="also write dynamically int8-quantised graphs")
    parser.add_argument("--check-data", default=None, help="a shard catalogue whose test images check parity")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output (refused otherwise)")
    args = parser.parse_args()

    model = AutoModel.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.model)
    info = export_embedding_graphs(
        model, processor, args.output, graphs=args.graphs, quantize_int8=args.int8, overwrite=args.overwrite
    )
    print(f"Exported {', '.join(info['graphs'])} to {args.output}")
    if args.check_data:
        products = load_catalogue(args.check_data, "test").select(range(max(PARITY_BATCH_SIZES)))
        embedder = OnnxEmbedder(args.output)
        report = {
            f"batch {size}": parity(model, embedder, products["image"][:size], products["title"][:size])
            for size in PARITY_BATCH_SIZES
        }
        print("Max |onnxruntime - PyTorch| per graph:")
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
