# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune an ECLIP checkpoint for object detection (Sec. 4.2.5) with Accelerate, then evaluate its mAP on the
held-out products' images and export it with a model card.

    python examples/finetune_detection.py --config configuration/finetune-detection-demo.yaml            # from ECLIP
    python examples/finetune_detection.py --config configuration/finetune-detection-demo-itc-only.yaml   # from ITC only
    python examples/finetune_detection.py --config ... --resume latest      # continue exactly after a stop
    accelerate launch --config_file configuration/accelerate-multi-gpu.yaml examples/finetune_detection.py --config ...
    python -m modeling_eclip.detection --model outputs/detection-eclip/model \\
        --compare outputs/detection-itc-only/model --data data/demo                 # Table 4 (right)

Every field of `modeling_eclip.detection.DetectionArguments` is also a flag and overrides the recipe.
"""

from modeling_eclip.detection.finetune import main

if __name__ == "__main__":
    main()
