# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""ECLIP pretraining with Accelerate (Sec. 3.3 objectives, Sec. 4.1 recipe); `python -m modeling_eclip.training` is
its command line. Training tools, not remote code: nothing a checkpoint ships imports them.

- `arguments.py`: the recipe (`PretrainingArguments`, a recipe YAML plus flags), the shipped presets and recipes, and
  `check_arguments`, every check that can fail before compute;
- `fields.py`: what every command line's argument dataclass shares: numeric ranges on the fields, "none" for None;
- `schedule.py`: the learning-rate schedule (`transformers.get_scheduler`);
- `builders.py`: the pretraining model with its pretrained towers, the processor, AdamW and its parameter groups;
- `checkpoints.py`: `CheckpointManager` (atomic `checkpoint-<step>` directories that load no pickle but a
  `weights_only` optimiser state, checked before use, exact resumption), `metrics.jsonl`;
- `resume.py`: what a resume restores and compares with the checkpoint, and which changed settings it refuses;
- `run.py`: what a run works with (`Run`, `Learner`) and how it starts (`start_run`);
- `loop.py`: `pretrain`, the loop, its logging, evaluation and checkpoints, and the end of a run;
- `export.py`: the `EclipModel` + `EclipProcessor` export with its model card, and the Hub uploads;
- `results.py`: what a run returns or raises, shared with the detection fine-tuning;
- `image_tower.py`: the image tower's own pretraining (`examples/pretrain_image_tower.py`);
- `tracking.py`: Accelerate's trackers (`report_to`).
"""

from .arguments import PretrainingArguments, check_arguments, load_model_config, load_recipe, parse_arguments
from .checkpoints import CheckpointManager
from .export import HubPusher, export_pretrained, render_model_card
from .loop import main, pretrain
from .results import NonFiniteLossError, PretrainingResult

__all__ = [
    "CheckpointManager",
    "HubPusher",
    "NonFiniteLossError",
    "PretrainingArguments",
    "PretrainingResult",
    "check_arguments",
    "export_pretrained",
    "load_model_config",
    "load_recipe",
    "main",
    "parse_arguments",
    "pretrain",
    "render_model_card",
]
