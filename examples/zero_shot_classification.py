# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot product classification with `pipeline("zero-shot-product-classification")` (paper Sec. 4.2.1).

Classifies held-out products of a shard catalogue into the catalogue's categories, once with the product title as
the instance prompt (image + title) and once with the image alone, and prints the predictions and accuracies::

    python examples/zero_shot_classification.py --model outputs/eclip-demo --data data/demo --num-products 12
"""

import argparse

from transformers import pipeline

from modeling_eclip import ZeroShotProductClassificationPipeline
from modeling_eclip.evaluation.search import load_catalogue
from modeling_eclip.pipeline_eclip import DEFAULT_HYPOTHESIS_TEMPLATE, PIPELINE_TASK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an exported ECLIP checkpoint folder (or Hub id)")
    parser.add_argument("--data", default="data/demo", help="a catalogue in the shard format")
    parser.add_argument("--split", default="test")
    parser.add_argument("--kind", default="catalog", choices=("catalog", "customer", "ad"), help="which image")
    parser.add_argument("--num-products", type=int, default=12, help="products to print (accuracy uses all)")
    parser.add_argument("--hypothesis-template", default=DEFAULT_HYPOTHESIS_TEMPLATE)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="e.g. cuda:0; default CPU")
    args = parser.parse_args()

    products = load_catalogue(args.data, args.split, kind=args.kind)
    images, titles, categories = list(products["image"]), list(products["title"]), list(products["category"])
    labels = sorted(set(categories))
    # pipeline_class: the package's own class, also for checkpoints that carry the pipeline as remote code.
    classifier = pipeline(
        PIPELINE_TASK, model=args.model, pipeline_class=ZeroShotProductClassificationPipeline, device=args.device
    )
    common = dict(candidate_labels=labels, hypothesis_template=args.hypothesis_template, batch_size=args.batch_size)
    with_titles = classifier(images, titles=titles, **common)
    image_only = classifier(images, **common)

    print(f"{len(products)} {args.split} products ({args.kind} images), {len(labels)} categories\n")
    for index in range(min(args.num_products, len(products))):
        print(f"{titles[index]!r} [{categories[index]}]")
        for name, predictions in (("image+title", with_titles), ("image only", image_only)):
            top = ", ".join(f"{hit['label']} {hit['score']:.2f}" for hit in predictions[index][:3])
            print(f"    {name + ':':<13}{top}")
    print()
    for name, predictions in (("image+title", with_titles), ("image only", image_only)):
        correct = sum(hits[0]["label"] == category for hits, category in zip(predictions, categories))
        print(f"Acc@1 {name}: {correct / len(products):.3f} ({correct}/{len(products)}, chance {1 / len(labels):.3f})")


if __name__ == "__main__":
    main()
