# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Pretrain ECLIP's image tower as an image classifier (the paper's ImageNet initialisation, built offline).

    python -m modeling_eclip.demo.image_pretraining_set --output data/emoji-pretraining
    python examples/pretrain_image_tower.py --dataset data/emoji-pretraining --output_dir outputs/image-tower \\
        --max_train_minutes 9
    python examples/pretrain.py --config configuration/recipe-demo.yaml --vision_model_name_or_path outputs/image-tower

Every field of `modeling_eclip.training.image_tower.ImageTowerArguments` is a flag. The output is a standard ViT
checkpoint (`ViTForImageClassification`: config, safetensors, image processor) plus `tower_info.json` with the
held-out accuracy; `EclipModel.from_vision_text_pretrained` loads it as the image tower.
"""

from modeling_eclip.training.image_tower import main

if __name__ == "__main__":
    main()
