# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""The offline demo data, built from installed emoji artwork; nothing else imports it but the demo recipe.

- `products.py`: which emoji are products, their categories and invented titles;
- `images.py`: drawing catalog, customer and ad photos of them (with boxes) in every installed artwork style;
- `catalogue.py`: the demo product catalogue in the format of `modeling_eclip.data`
  (`python -m modeling_eclip.demo.catalogue --output data/demo`);
- `image_pretraining_set.py`: emoji that are not products, as an image-classification set for the image tower
  (`python -m modeling_eclip.demo.image_pretraining_set --output data/emoji-pretraining`).
"""
