# Copyright 2026 The ECLIP for transformers authors.
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in
# compliance with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""ECLIP for transformers. Importing this package registers ECLIP with the Auto classes.

The flat modules are the remote code `save_pretrained` copies next to a checkpoint: `configuration_eclip.py`,
`modeling_eclip.py`, `loss_eclip.py`, `processing_eclip.py`, `pipeline_eclip.py`, `grounding_eclip.py` (they import
only each other, as `from .x import Y`, transformers, torch and third-party libraries). The subpackages are tools
that no remote code imports: `data/` (shard format, training stream, demo catalogue), `training/` (pretraining) and
`evaluation/` (the paper's tables, metrics, product search); `presets` is `configuration/` of the repository.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForObjectDetection,
    AutoModelForPreTraining,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_eclip import OBJECTIVES, EclipConfig, EclipDecoderConfig
from .modeling_eclip import (
    LOSS_NAMES,
    EclipDecoderOutput,
    EclipForObjectDetection,
    EclipForPreTraining,
    EclipForPreTrainingOutput,
    EclipInstanceDecoder,
    EclipModel,
    EclipObjectDetectionOutput,
    EclipOutput,
    EclipPreTrainedModel,
)
from .pipeline_eclip import PIPELINE_TASK, ZeroShotProductClassificationPipeline, save_pretrained_with_pipeline
from .processing_eclip import EclipImageProcessor, EclipProcessor

AutoConfig.register("eclip", EclipConfig, exist_ok=True)
AutoConfig.register("eclip_decoder", EclipDecoderConfig, exist_ok=True)
AutoModel.register(EclipConfig, EclipModel, exist_ok=True)
AutoModel.register(EclipDecoderConfig, EclipInstanceDecoder, exist_ok=True)
AutoModelForPreTraining.register(EclipConfig, EclipForPreTraining, exist_ok=True)
# Detection transfer (Sec. 4.2.5): transformers' object-detection pipeline runs on fine-tuned checkpoints.
AutoModelForObjectDetection.register(EclipConfig, EclipForObjectDetection, exist_ok=True)
# CLIP-style logits_per_image: the stock zero-shot-image-classification pipeline runs on ECLIP checkpoints.
AutoModelForZeroShotImageClassification.register(EclipConfig, EclipModel, exist_ok=True)
AutoProcessor.register(EclipConfig, EclipProcessor, exist_ok=True)
# PIL only: an export loads with the preprocessing pretraining used, torchvision installed or not.
AutoImageProcessor.register(EclipConfig, image_processor_classes={"pil": EclipImageProcessor}, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=ZeroShotProductClassificationPipeline, pt_model=AutoModel, type="multimodal"
)

# save_pretrained writes `auto_map` and copies the code, so checkpoints load with trust_remote_code=True
# where this package is not installed.
EclipConfig.register_for_auto_class()
EclipModel.register_for_auto_class("AutoModel")
EclipForPreTraining.register_for_auto_class("AutoModelForPreTraining")
EclipForObjectDetection.register_for_auto_class("AutoModelForObjectDetection")
EclipProcessor.register_for_auto_class("AutoProcessor")
EclipImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "LOSS_NAMES",
    "OBJECTIVES",
    "EclipConfig",
    "EclipDecoderConfig",
    "EclipDecoderOutput",
    "EclipForObjectDetection",
    "EclipForPreTraining",
    "EclipForPreTrainingOutput",
    "EclipImageProcessor",
    "EclipInstanceDecoder",
    "EclipModel",
    "EclipObjectDetectionOutput",
    "EclipOutput",
    "EclipPreTrainedModel",
    "EclipProcessor",
    "ZeroShotProductClassificationPipeline",
    "save_pretrained_with_pipeline",
]
