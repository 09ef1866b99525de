# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Serving tools: ONNX export of ECLIP's embedding paths and an onnxruntime embedder over the exported graphs.

Not remote code (needs `onnx`, `onnxscript` and `onnxruntime`, the `serving` extra); remote-code files never import it.
"""

from .onnx_export import EMBEDDING_GRAPHS, ExportedEmbeddingGraph, OnnxEmbedder, export_embedding_graphs

__all__ = ["EMBEDDING_GRAPHS", "ExportedEmbeddingGraph", "OnnxEmbedder", "export_embedding_graphs"]
