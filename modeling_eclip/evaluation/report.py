# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The results of `evaluate_model` for people: markdown tables in the paper's layout and a t-SNE plot (Fig. 5)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image


def plot_tsne(
    embeddings: torch.Tensor, labels: Sequence[str], path: str | os.PathLike, seed: int = 0, title: str | None = None
) -> None:
    """Saves a 2-D t-SNE (scikit-learn) of `embeddings` coloured by `labels` as a PNG (paper Fig. 5)."""
    import matplotlib.pyplot as plt

    figure = tsne_figure(embeddings, labels, seed, title)
    figure.savefig(path)
    plt.close(figure)


def figure_to_image(figure: Any) -> Image.Image:
    """A matplotlib figure as an RGB PIL image (for experiment trackers); the figure is closed."""
    import matplotlib.pyplot as plt

    figure.canvas.draw()
    image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())).convert("RGB")
    plt.close(figure)
    return image


def tsne_figure(embeddings: torch.Tensor, labels: Sequence[str], seed: int = 0, title: str | None = None) -> Any:
    """A matplotlib figure of the 2-D t-SNE (scikit-learn) of `embeddings` coloured by `labels` (paper Fig. 5)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    if len(embeddings) != len(labels) or len(embeddings) < 3:
        raise ValueError(f"t-SNE needs >= 3 embeddings with one label each, got {len(embeddings)} and {len(labels)}")
    points = TSNE(
        n_components=2, perplexity=min(30.0, (len(embeddings) - 1) / 3), init="pca", random_state=seed
    ).fit_transform(embeddings.float().numpy())
    names = sorted(set(labels))
    colours, markers = plt.get_cmap("tab10").colors, "os^vDP*X"
    figure, axis = plt.subplots(figsize=(8, 6), dpi=100)
    for index, name in enumerate(names):
        chosen = [i for i, label in enumerate(labels) if label == name]
        # 10 colours x 8 markers keep up to 80 categories apart.
        style = {"color": colours[index % 10], "marker": markers[index // 10 % len(markers)]}
        axis.scatter(points[chosen, 0], points[chosen, 1], s=14, label=name, **style)
    axis.set_title(title or "t-SNE of product embeddings by category")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=1 + len(names) // 30)
    figure.tight_layout()
    return figure


def _at_k(label: str, path: tuple[str, ...], metric: str, k_values: tuple) -> list[tuple]:
    """A column per cut-off: ``<label>@<k>``, the value ``<metric>@<k>`` under `path`."""
    return [(f"{label}@{k}", (*path, f"{metric}@{k}")) for k in k_values]


def _grounding_controls(*path: str) -> list[tuple]:
    """The text-conditioned control and the positive map of `visual_grounding`'s results under `path`."""
    return [
        ("both found", (*path, "text_conditioned", "acc@0.5")),
        ("both: chance", (*path, "text_conditioned", "chance")),
        ("map in box / area", (*path, "positive_map", "mass_in_box_over_area"), "ratio"),
    ]


# (title, columns): a column is (header, path into the results, unit if not percent).
_TABLES = (
    (
        "Table 1. Zero-shot product classification and image-text retrieval",
        [
            ("Acc@1 image+title", ("table1", "classification", "acc@1 (image+title)")),
            ("Acc@1 image", ("table1", "classification", "acc@1 (image)")),
            ("Acc@1 title (control)", ("table1", "classification", "acc@1 (title)")),
            ("Acc@1 h (title prompt)", ("table1", "classification", "acc@1 (instance (title prompt))")),
        ]
        + _at_k("I2T R", ("table1", "image_to_text"), "r", (1, 5))
        + _at_k("T2I R", ("table1", "text_to_image"), "r", (1, 5)),
    ),
    (
        "Table 2. Zero-shot product retrieval: coarse (same category) and fine-grained (same product)",
        _at_k("coarse mAP", ("table2", "coarse"), "map", (1, 5, 10))
        + _at_k("fine R", ("table2", "fine_grained"), "r", (1, 5, 10))
        + _at_k("fine mAP", ("table2", "fine_grained"), "map", (1, 5, 10)),
    ),
    (
        "Table 3. Zero-shot instance-level product retrieval (ad images, every product in the ad is a match)",
        _at_k("mAP", ("table3", "instance_level"), "map", (10, 50))
        + _at_k("mAR", ("table3", "instance_level"), "mar", (10, 50)),
    ),
    (
        "Table 4 (left). Zero-shot visual grounding; control: the same images prompted with a distractor's title",
        _at_k("Acc", ("table4", "grounding"), "acc", (0.5, 0.7))
        + _at_k("distractor Acc", ("table4", "distractor"), "acc", (0.5, 0.7))
        + _grounding_controls("table4"),
    ),
    (
        "New scenes of training products (photos composed afresh, never seen in training): image-only retrieval of "
        "the catalog image, and text-conditioned grounding (both the product's and a distractor's title find theirs)",
        _at_k("same-source R", ("new_scenes", "retrieval", "same_source"), "r", (1, 5))
        + _at_k("cross-source R", ("new_scenes", "retrieval", "cross_source"), "r", (1, 5))
        + [
            ("R@1: chance", ("new_scenes", "retrieval", "chance@1")),
            ("grounding Acc@0.5", ("new_scenes", "grounding", "grounding", "acc@0.5")),
        ]
        + _grounding_controls("new_scenes", "grounding"),
    ),
    (
        "Controls on held-out images: the title's score map (its mass in the product's box / the box's area; 1 = "
        "uniform), the positive-slot map's entropy over the patch tokens / log N (1 = uniform), and a blank image "
        "prompted with each title retrieving that product (R@1; should stay at chance)",
        [
            ("map in box / area", ("controls", "positive_map", "mass_in_box_over_area"), "ratio"),
            ("map entropy / log N", ("controls", "positive_map", "entropy_over_log_n"), "ratio"),
            ("blank+title R@1", ("controls", "title_leakage", "r@1")),
            ("chance", ("controls", "title_leakage", "chance@1")),
        ],
    ),
)


def _lookup(results: Mapping[str, Any], path: Sequence[str], unit: str = "percent") -> str:
    value: Any = results
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return "-"
        value = value[key]
    return f"{value:.2f}" if unit == "ratio" else f"{100 * value:.1f}"


def format_results(
    results: Mapping[str, Any],
    compare: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    names: Sequence[str] | None = None,
) -> str:
    """The results of `evaluate_model` as markdown tables in the paper's layout (percent, ratios as such; one row per
    model).

    With `compare` (one result set or several), each other model gets a row under the first in every table; `names`
    label the rows (default: ``model (instance)`` / ``compare (global)`` with each model's embedding mode)."""
    others = [] if compare is None else [compare] if isinstance(compare, Mapping) else list(compare)
    runs = [results, *others]
    if names is None:
        labels = ["model", *(["compare"] if len(others) == 1 else [f"compare {i + 1}" for i in range(len(others))])]
        names = [f"{name} ({run.get('embedding', '?')})" for name, run in zip(labels, runs)]
    if len(names) != len(runs):
        raise ValueError(f"got {len(names)} names for {len(runs)} result sets")
    blocks = []
    for title, columns in _TABLES:
        if not any(_lookup(run, column[1]) != "-" for run in runs for column in columns):
            continue  # e.g. Table 4 when grounding was skipped
        header = "| Method | " + " | ".join(column[0] for column in columns) + " |"
        rule = "|---|" + "---:|" * len(columns)
        rows = [
            f"| {name} | " + " | ".join(_lookup(run, *column[1:]) for column in columns) + " |"
            for name, run in zip(names, runs)
        ]
        blocks.append("\n".join([f"**{title}**", "", header, rule, *rows]))
    return "\n\n".join(blocks) + "\n"
