# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot evaluation of an ECLIP (or ITC-only CLIP baseline) checkpoint on a product catalogue (paper Sec. 4.2),
and product search. Tools, not remote code: nothing a checkpoint ships imports them.

- `embedding.py`: reading a catalogue split (the shard format of `modeling_eclip/data/shard_format.py`) and embedding
  it once, with instance or global embeddings;
- `tables.py`: Tables 1-4 (classification, image-text retrieval, product retrieval, instance-level retrieval,
  grounding), `evaluate_model` and `quick_evaluate`;
- `instances.py`: the evaluations beyond the paper's tables (new scenes, map diagnostics, title leakage);
- `scoring.py`: the metrics over score matrices and the grounding score maps that both of those use;
- `metrics.py`: the metrics as `evaluate.Metric` subclasses;
- `report.py`: markdown tables in the paper's layout, the t-SNE plot;
- `search.py`: a faiss product-search index over a catalogue (`pip install ".[search]"`);
- `cli.py`: `python -m modeling_eclip.evaluation`.
"""

from .embedding import load_catalogue_split
from .report import format_results, plot_tsne
from .tables import evaluate_model, quick_evaluate, quick_evaluate_with_figures

__all__ = [
    "evaluate_model",
    "format_results",
    "load_catalogue_split",
    "plot_tsne",
    "quick_evaluate",
    "quick_evaluate_with_figures",
]
