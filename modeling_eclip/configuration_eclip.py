# Copyright 2026 The ECLIP for transformers authors.
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in
# compliance with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""ECLIP configurations: the instance decoder (`EclipDecoderConfig`) and the full model (`EclipConfig`).

Paper: "Learning Instance-Level Representation for Large-Scale Multi-Modal Pretraining in E-commerce"
(Jin et al., CVPR 2023). Equation numbers in docstrings refer to that paper.
"""

from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

NEGATIVE_PROMPT_SAMPLINGS = ("random", "hard")
NEGATIVE_QUERY_MODES = ("gaussian", "text", "ema")
# The pretraining objectives: L_itc (Eq. 6-7), L_inter (Eq. 8), L_itm, L_intra (Eq. 9) and L_R (Eq. 10). Each has a
# weight `<name>_loss_weight` here and a term `loss_<name>` in `EclipForPreTrainingOutput`.
OBJECTIVES = ("itc", "inter", "itm", "intra", "entropy")
# The matching costs and loss weights of the object-detection transfer (DETR's names, read by its loss).
DETECTION_LOSS_FIELDS = (
    "class_cost",
    "bbox_cost",
    "giou_cost",
    "bbox_loss_coefficient",
    "giou_loss_coefficient",
    "eos_coefficient",
)


@strict
class EclipDecoderConfig(PreTrainedConfig):
    r"""
    Configuration of [`EclipInstanceDecoder`], the instance decoder of Sec. 3.2 (Eq. 2-5).

    Args:
        hidden_size (`int`, defaults to 512):
            The joint embedding dimension D shared by the prompts, the projected patch tokens Z and the slots H.
        num_hidden_layers (`int`, defaults to 6):
            Number of decoder blocks L (the paper uses 6).
        num_queries (`int`, defaults to 20):
            Number of instance queries T (the paper uses 20): one positive prompt and T-1 negatives.
        num_attention_heads (`int`, defaults to 8):
            Heads of the multi-head self-attention over the slots that follows each slot-attention layer.
        intermediate_size (`int`, defaults to 2048):
            Width of the feed-forward network of each block.
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the feed-forward network.
        hidden_dropout_prob (`float`, defaults to 0.0):
            Dropout on the residual branches.
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on the self-attention probabilities.
        layer_norm_eps (`float`, defaults to 1e-6):
            Epsilon of the pre-LayerNorms (normalisation placement is not specified by the paper; we use pre-LN).
        slot_attention_epsilon (`float`, defaults to 1e-8):
            Added to the denominator of the weighted mean of Eq. 4 so an empty slot does not divide by zero.
        num_prompt_types (`int`, defaults to 2):
            Number of prompt modalities for the type embedding of Eq. 1 (0 = text, 1 = image).
        negative_query_mode (`str`, defaults to `"gaussian"`):
            How the T-1 negative queries are formed at inference (Sec. 3.4, ablation Table 6): `"gaussian"`
            (a fixed seeded set of standard-Gaussian vectors shared by every sample), `"text"` (prompts of other
            products in the batch) or `"ema"` (an exponential moving average of training prompts).
        negative_query_seed (`int`, defaults to 0):
            Seed of the generator drawing the fixed Gaussian negatives, so embeddings are reproducible.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialiser.
    """

    model_type = "eclip_decoder"
    base_config_key = "decoder_config"

    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_queries: int = 20
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    layer_norm_eps: float = 1e-6
    slot_attention_epsilon: float = 1e-8
    num_prompt_types: int = 2
    negative_query_mode: str = "gaussian"
    negative_query_seed: int = 0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Checked here so users get a plain ValueError; `@strict` wraps errors raised by its validators.
        self.check_fields()

    def validate_architecture(self) -> None:
        """Part of `@strict` validation (also run on save)."""
        self.check_fields()

    def check_fields(self) -> None:
        """Raises a `ValueError` naming the first field that would make the decoder unbuildable."""
        if self.num_queries < 2:
            raise ValueError(
                f"num_queries (T) must be at least 2 (one positive and at least one negative query), "
                f"got {self.num_queries}."
            )
        if self.num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers (L) must be at least 1, got {self.num_hidden_layers}.")
        if self.num_attention_heads < 1 or self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size (D={self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.num_prompt_types < 1:
            raise ValueError(f"num_prompt_types must be at least 1, got {self.num_prompt_types}.")
        if self.negative_query_mode not in NEGATIVE_QUERY_MODES:
            raise ValueError(
                f"negative_query_mode must be one of {NEGATIVE_QUERY_MODES}, got {self.negative_query_mode!r}."
            )
        if self.slot_attention_epsilon <= 0:
            raise ValueError(f"slot_attention_epsilon must be positive, got {self.slot_attention_epsilon}.")


@strict
class EclipConfig(PreTrainedConfig):
    r"""
    Configuration of [`EclipModel`] and [`EclipForPreTraining`]: an image tower (any ViT-style model with patch
    tokens), a text tower (any BERT-like encoder), an instance decoder and the pretraining objectives.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the image encoder; a dict is resolved through its `model_type` (default `"vit"`).
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the text encoder (default `"bert"`).
        decoder_config (`dict` or `EclipDecoderConfig`, *optional*):
            Config of the instance decoder. Its `hidden_size` is the joint dimension D and defaults to
            `projection_dim`.
        projection_dim (`int`, defaults to 512):
            Joint embedding dimension D of g_I (which also maps the patch tokens to Z, Sec. 3.2) and g_T. D = 512
            makes the ViT-B/16 and ViT-L/16 presets land on the paper's 220 M / 450 M parameters.
        logit_scale_init_value (`float`, defaults to ln(1/0.07)):
            Initial value of the learnable log inverse temperature 1/tau (Eq. 6-9).
        logit_scale_max (`float`, defaults to ln(100)):
            The log inverse temperature is clamped to this value in every loss, as in CLIP.
        momentum (`float`, defaults to 0.995):
            Exponential-moving-average factor of the momentum model (Eq. 8).
        queue_size (`int`, defaults to 4096):
            Length of the queue of momentum instance features used as extra negatives in Eq. 8.
        image_prompt_probability (`float`, defaults to 0.2):
            Probability that a sample's positive prompt is the image prompt g_I(v_cls) of the product's other image
            instead of its text g_T(w_cls) during pretraining (Eq. 1, multi-modal prompts).
        random_positive_slot (`bool`, defaults to `True`):
            Put the positive prompt at a random slot during pretraining, so the learned position embedding cannot
            become a shortcut for Eq. 9. At inference the positive is slot 0, as in Sec. 3.4.
        negative_prompt_sampling (`str`, defaults to `"random"`):
            How the T-1 negative prompts of a training sample are "sampled from other products" (Sec. 3.3):
            `"random"` (uniformly, batch first, then the queue) or `"hard"` (one prompt per other product of the batch
            and the queue, drawn without replacement with probability softmax(s(x^I, prompt) / tau), the image-text
            similarity of L_itc; ALBEF samples its ITM negatives the same way). Hard negatives include the other
            products visible in the image, so the slots must tell them apart (Eq. 9).
        itc_loss_weight, inter_loss_weight, itm_loss_weight, intra_loss_weight, entropy_loss_weight (`float`):
            Weights of L_itc (Eq. 6-7), L_inter (Eq. 8), L_itm, L_intra (Eq. 9) and L_R (Eq. 10). The paper sums
            them (all 1.0); 0 switches a term off (ablation Table 5).
        negative_entropy_weight (`float`, defaults to 1.0):
            Weight of the negative slots' part of Eq. 10, sum_{j != r} (log N - H(M_j)), relative to the positive
            slot's H(M_r) (the paper: 1). The two parts pull against each other (negatives spread evenly over the
            tokens leave the positive slot an even share too), and the negative part has T-1 terms.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialiser of the projections and query embeddings.
        auxiliary_loss (`bool`, defaults to `False`):
            [`EclipForObjectDetection`] (Sec. 4.2.5): also apply the detection loss to the heads' predictions after
            every decoder block, as DETR does.
        class_cost, bbox_cost, giou_cost (`float`, defaults to 1, 5 and 2):
            Weights of the classification, L1 box and generalised-IoU terms in the Hungarian matching cost of the
            detection loss (DETR's defaults).
        bbox_loss_coefficient, giou_loss_coefficient (`float`, defaults to 5 and 2):
            Weights of the L1 box and generalised-IoU losses relative to the classification loss (DETR's defaults).
        eos_coefficient (`float`, defaults to 0.1):
            Relative classification weight of the "no object" class (DETR's default).
    """

    model_type = "eclip"
    sub_configs_defaults: ClassVar[dict] = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
        "decoder_config": SubConfigSpec(config_class=EclipDecoderConfig),
    }

    vision_config: PreTrainedConfig | dict | None = None
    text_config: PreTrainedConfig | dict | None = None
    decoder_config: EclipDecoderConfig | dict | None = None
    projection_dim: int = 512
    logit_scale_init_value: float | int = 2.6592
    logit_scale_max: float | int = 4.6052
    momentum: float = 0.995
    queue_size: int = 4096
    image_prompt_probability: float | int = 0.2
    random_positive_slot: bool = True
    negative_prompt_sampling: str = "random"
    itc_loss_weight: float | int = 1.0
    inter_loss_weight: float | int = 1.0
    itm_loss_weight: float | int = 1.0
    intra_loss_weight: float | int = 1.0
    entropy_loss_weight: float | int = 1.0
    negative_entropy_weight: float | int = 1.0
    initializer_range: float = 0.02
    # Object-detection transfer (EclipForObjectDetection, Sec. 4.2.5), read by transformers' DETR loss.
    auxiliary_loss: bool = False
    class_cost: float | int = 1
    bbox_cost: float | int = 5
    giou_cost: float | int = 2
    bbox_loss_coefficient: float | int = 5
    giou_loss_coefficient: float | int = 2
    eos_coefficient: float | int = 0.1

    loss_weight_names: ClassVar[tuple[str, ...]] = tuple(f"{name}_loss_weight" for name in OBJECTIVES)
    # The objectives that need the instance decoder, the momentum model and the queues (all but Eq. 6-7).
    decoder_loss_weight_names: ClassVar[tuple[str, ...]] = loss_weight_names[1:]

    def __post_init__(self, **kwargs):
        # The decoder works in the joint space, so its width defaults to D instead of its own class default.
        if self.decoder_config is None:
            self.decoder_config = {"hidden_size": self.projection_dim}
        elif isinstance(self.decoder_config, dict) and "hidden_size" not in self.decoder_config:
            self.decoder_config = {**self.decoder_config, "hidden_size": self.projection_dim}
        super().__post_init__(**kwargs)
        self.check_fields()

    def validate_architecture(self) -> None:
        """Part of `@strict` validation (also run on save)."""
        self.check_fields()

    def check_fields(self) -> None:
        """Raises a `ValueError` naming the first field that would make the model unbuildable."""
        self.decoder_config.check_fields()
        if self.decoder_config.hidden_size != self.projection_dim:
            raise ValueError(
                f"decoder_config.hidden_size ({self.decoder_config.hidden_size}) must equal projection_dim "
                f"({self.projection_dim}): the decoder works in the joint embedding space D."
            )
        patch_size = getattr(self.vision_config, "patch_size", None)
        image_size = getattr(self.vision_config, "image_size", None)
        if patch_size is None or image_size is None:
            raise ValueError(
                f"vision_config (model_type={self.vision_config.model_type!r}) has no patch_size/image_size: "
                "ECLIP needs a patch-based image encoder (ViT-style) whose patch tokens form Z."
            )
        for name in ("image_size", "patch_size"):
            value = getattr(self.vision_config, name)
            if isinstance(value, (list, tuple)) and (len(value) != 2 or value[0] != value[1]):
                raise ValueError(f"vision_config.{name} must be square, got {value}.")
        if _as_int(image_size) % _as_int(patch_size) != 0:
            raise ValueError(
                f"vision_config.image_size ({image_size}) must be a multiple of vision_config.patch_size "
                f"({patch_size})."
            )
        if self.projection_dim < 1:
            raise ValueError(f"projection_dim must be positive, got {self.projection_dim}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
        if self.queue_size < 0:
            raise ValueError(f"queue_size must be non-negative, got {self.queue_size}.")
        if not 0.0 <= self.image_prompt_probability <= 1.0:
            raise ValueError(f"image_prompt_probability must be in [0, 1], got {self.image_prompt_probability}.")
        if self.negative_prompt_sampling not in NEGATIVE_PROMPT_SAMPLINGS:
            raise ValueError(
                f"negative_prompt_sampling must be one of {NEGATIVE_PROMPT_SAMPLINGS}, "
                f"got {self.negative_prompt_sampling!r}."
            )
        for name in (*self.loss_weight_names, "negative_entropy_weight", *DETECTION_LOSS_FIELDS):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}.")

    @property
    def uses_decoder_objectives(self) -> bool:
        """Whether any objective needing the decoder, the momentum model and the queues is on; False for the ITC-only
        CLIP baseline (ablation Table 5), whose decoder is never trained."""
        return any(getattr(self, name) > 0 for name in self.decoder_loss_weight_names)

    def check_global_batch_size(self, global_batch_size: int) -> None:
        """Raises a clear error when the queue cannot hold whole global batches: the one place of this rule. The
        training arguments call it before training, `EclipForPreTraining.enqueue` before every write."""
        if not self.uses_decoder_objectives:
            return
        if global_batch_size > self.queue_size:
            raise ValueError(f"The global batch ({global_batch_size}) is larger than queue_size ({self.queue_size}).")
        if self.queue_size % global_batch_size != 0:
            raise ValueError(
                f"queue_size ({self.queue_size}) must be a multiple of the global batch size ({global_batch_size}) "
                "so every enqueue writes one contiguous block; change queue_size or the batch size."
            )

    @property
    def image_size(self) -> int:
        """Side of the square input image, in pixels."""
        return _as_int(self.vision_config.image_size)

    @property
    def patch_size(self) -> int:
        """Side of a square patch, in pixels."""
        return _as_int(self.vision_config.patch_size)

    @property
    def num_patches_per_side(self) -> int:
        """Side of the patch grid (the grounding map is shaped (B, h, w) with h = w = this)."""
        return self.image_size // self.patch_size

    @classmethod
    def from_vision_text_configs(
        cls, vision_config: PreTrainedConfig, text_config: PreTrainedConfig, **kwargs
    ) -> "EclipConfig":
        """Builds an ECLIP config around existing tower configs (e.g. those of pretrained checkpoints)."""
        return cls(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(), **kwargs)


def _as_int(size: int | list[int] | tuple[int, int]) -> int:
    return int(size[0]) if isinstance(size, (list, tuple)) else int(size)


__all__ = ["EclipConfig", "EclipDecoderConfig"]
