"""The published benchmark recipes' builders (``configs/<model>_<dataset>.py``): the paper's or
MMSegmentation's crop, batch, schedule, augmentation, loss and optimizer over
`segjax.config_defaults.base_config`."""

import ml_collections

from segjax.config_defaults import base_config
from segjax.config_defaults import optimizer_config

# MMSegmentation's PhotoMetricDistortion without hue: brightness 32/255, contrast and saturation
# 0.5-1.5 (segjax/data/ops.py, photometric).
MMSEG_PHOTOMETRIC = "photometric(0.125, 0.5, 0.5)"
# Panoptic-DeepLab's loss (deeplab2): cross-entropy on the hardest 20% of pixels with the
# small-instance weights of the panoptic_targets op, 200 x centre MSE, 0.01 x offset L1.
PANOPTIC_DEEPLAB_LOSSES = (
  ("logits", "semantic", "cross_entropy(top_k_percent=0.2)", 1.0, "semantic_weight"),
  ("center", "center", "weighted_mse", 200.0, "center_weight"),
  ("offset", "offset", "weighted_l1", 0.01, "offset_weight"),
)


def panoptic_deeplab_postprocess(nms_kernel: int, stuff_area: int) -> str:
  """deeplab2's grouping (centre threshold 0.1, 200 centres) and COCO-scored instances."""
  return (
    f"argmax|panoptic_deeplab(center_threshold=0.1, nms_kernel={nms_kernel}, top_k=200, "
    f"stuff_area={stuff_area})|scored_instances"
  )


def recipe_config(
  dataset: str,
  *,
  crop_size,
  batch_size: int,
  num_train_steps: int,
  train_pp: str,
  eval_pp: str = "",
  train_split: str = "train",
  eval_split: str = "validation",
) -> ml_collections.ConfigDict:
  """A benchmark recipe: a tfds dataset (``"tfds:cityscapes"``, ...), the paper's crop, batch,
  schedule length and augmentation; SGD (momentum 0.9, weight decay 5e-4, poly 0.9) and
  bfloat16 computation with float32 parameters, as set here, unless the config changes them."""
  config = base_config()
  config.data.update(
    dict(
      name=dataset,
      crop_size=tuple(crop_size),
      train_pp=train_pp,
      eval_pp=eval_pp,
      train_split=train_split,
    )
  )
  config.model.dtype = "bfloat16"
  config.batch_size = batch_size
  config.num_train_steps = num_train_steps
  config.eval_splits = (eval_split,)
  config.predict.split = eval_split
  return config


def _random_crop(crop: tuple[int, int]) -> str:
  return f"random_crop({crop[0] if crop[0] == crop[1] else crop})"


def mmseg_deeplab_recipe(
  model: str,
  dataset: str,
  *,
  crop_size: int | tuple[int, int],
  batch_size: int,
  num_train_steps: int,
  reference: str,
  resize_long: int | None = None,
  **kwargs,
) -> ml_collections.ConfigDict:
  """MMSegmentation's DeepLabV3 / DeepLabV3+ (``model``) ResNet-101 recipe at output stride 8:
  auxiliary FCN head on ``layer3`` weighted 0.4, SGD (lr 0.01, poly 0.9 down to 1e-4), random
  scale 0.5-2.0, crop, flip and photometric distortion. With ``resize_long`` (ADE20K, VOC),
  images are first resized to fit ``(resize_long, 4 x resize_long)`` and evaluation resizes the
  long side to ``resize_long`` and pads to a square; ``kwargs`` go to `recipe_config`."""
  crop = (crop_size,) * 2 if isinstance(crop_size, int) else tuple(crop_size)
  resize = f"resize_keep_ratio({resize_long}, {4 * resize_long})|" if resize_long else ""
  if resize_long:
    kwargs.setdefault("eval_pp", f"resize_keep_ratio(long={resize_long})|pad_to({resize_long})")
  config = recipe_config(
    dataset,
    crop_size=crop,
    batch_size=batch_size,
    num_train_steps=num_train_steps,
    train_pp=f"{resize}random_scale(0.5, 2.0)|{_random_crop(crop)}|flip_lr|{MMSEG_PHOTOMETRIC}",
    **kwargs,
  )
  config.model.update(dict(name=model, backbone="resnet101", output_stride=8, aux_head=True))
  config.losses = (("aux_logits", "semantic", "cross_entropy", 0.4),)
  config.optimizer.end_factor = 0.01  # poly down to 1e-4
  config.reference = reference
  return config


def panoptic_deeplab_recipe(
  dataset: str,
  *,
  crop_size: int | tuple[int, int],
  batch_size: int,
  num_train_steps: int,
  learning_rate: float,
  warmup_steps: int,
  resize_pp: str,
  scales: tuple[float, float],
  eval_pp: str,
  nms_kernel: int,
  stuff_area: int,
  reference: str,
) -> ml_collections.ConfigDict:
  """deeplab2's Panoptic-DeepLab ResNet-50 recipe at output stride 32: ``resize_pp`` then random
  scale over ``scales``, crop, flip and the panoptic targets (centre Gaussians of sigma 8,
  instances under 4096 pixels weighted 3); the loss `PANOPTIC_DEEPLAB_LOSSES`; Adam with poly
  0.9 decay; `panoptic_deeplab_postprocess` grouping."""
  crop = (crop_size,) * 2 if isinstance(crop_size, int) else tuple(crop_size)
  config = recipe_config(
    dataset,
    crop_size=crop,
    batch_size=batch_size,
    num_train_steps=num_train_steps,
    train_pp=(
      f"{resize_pp}random_scale{tuple(scales)}|{_random_crop(crop)}|flip_lr|"
      "panoptic_targets(sigma=8.0, small_instance_area=4096, small_instance_weight=3.0)"
    ),
    eval_pp=eval_pp,
  )
  config.model.update(dict(name="panoptic_deeplab", backbone="resnet50", output_stride=32))
  config.loss = ""
  config.losses = PANOPTIC_DEEPLAB_LOSSES
  config.optimizer = optimizer_config(
    name="adam", learning_rate=learning_rate, schedule="poly", power=0.9, warmup_steps=warmup_steps
  )
  config.postprocess = panoptic_deeplab_postprocess(nms_kernel=nms_kernel, stuff_area=stuff_area)
  config.reference = reference
  return config


def mask2former_recipe(
  dataset: str,
  *,
  crop_size: int | tuple[int, int],
  batch_size: int,
  num_train_steps: int,
  train_pp: str,
  eval_pp: str,
  target: str,
  reference: str,
  loss: str = "points",
  **optimizer,
) -> ml_collections.ConfigDict:
  """The Mask2Former ResNet-50 recipe (Cheng et al. 2022; the paper's detectron2 configs): 100
  queries, 6 deformable encoder layers, 9 decoder layers, 8 heads, 256 channels; the paper's
  loss on the segments of ``target`` (``"panoptic"`` or ``"semantic"``) with 12,544 points and
  deep supervision; AdamW 1e-4, weight decay 0.05, the backbone at 0.1× the rate, gradient
  clipping at 0.01 over the model, poly 0.9 without warm-up (``optimizer`` overrides);
  post-processing with the paper's thresholds; bfloat16 computation. ``loss="dense"`` (a config
  file's argument, ``--config=configs/mask2former_coco.py:dense``): the mask losses and matching
  costs on every pixel of the stride-4 masks instead of 12,544 sampled points (no gathers)."""
  if loss not in ("points", "dense"):
    raise ValueError(
      f"mask2former recipe: loss {loss!r} is not 'points' (the paper's 12,544 "
      "sampled points) or 'dense' (every mask pixel)"
    )
  points = 12544 if loss == "points" else 0
  crop = (crop_size,) * 2 if isinstance(crop_size, int) else tuple(crop_size)
  config = recipe_config(
    dataset,
    crop_size=crop,
    batch_size=batch_size,
    num_train_steps=num_train_steps,
    train_pp=train_pp,
    eval_pp=eval_pp,
  )
  config.model = ml_collections.ConfigDict(
    dict(
      name="mask2former",
      backbone="resnet50",
      num_queries=100,
      dtype="bfloat16",
      remat=False,
      pretrained="",
    )
  )
  config.loss = ""
  config.losses = (
    (("class_logits", target, f"mask2former_loss(max_targets=100, num_points={points})", 1.0)),
  )
  config.train_metrics = ("mask_confusion",)  # at the masks' stride-4 resolution
  config.optimizer = optimizer_config(
    **{
      **dict(
        name="adamw",
        learning_rate=1e-4,
        weight_decay=0.05,
        schedule="poly",
        power=0.9,
        grad_clip_norm=0.01,
        lr_multipliers=(("pixel_level_module/encoder/", 0.1),),
      ),
      **optimizer,
    }
  )
  config.postprocess = "argmax|mask_panoptic|mask_instances" if target == "panoptic" else "argmax"
  config.reference = reference
  return config


def segformer_recipe(
  dataset: str,
  *,
  variant: str,
  crop_size: int | tuple[int, int],
  batch_size: int,
  num_train_steps: int,
  train_pp: str,
  eval_pp: str,
  reference: str,
) -> ml_collections.ConfigDict:
  """The SegFormer recipe (Xie et al. 2021; MMSegmentation's ``segformer_mit-*`` configs): AdamW
  6e-5, weight decay 0.01, the decode head at 10× the rate, 1,500 steps of linear warm-up then
  poly 1.0; stochastic depth 0.1; cross-entropy; bfloat16 computation. The encoder starts from
  ImageNet weights (Hugging Face ``nvidia/mit-b0`` via `segjax.models.from_transformers`)."""
  crop = (crop_size,) * 2 if isinstance(crop_size, int) else tuple(crop_size)
  config = recipe_config(
    dataset,
    crop_size=crop,
    batch_size=batch_size,
    num_train_steps=num_train_steps,
    train_pp=train_pp,
    eval_pp=eval_pp,
  )
  config.model = ml_collections.ConfigDict(
    dict(name="segformer", variant=variant, drop_path_rate=0.1, dtype="bfloat16", pretrained="")
  )
  config.loss = "cross_entropy"
  config.optimizer = optimizer_config(
    name="adamw",
    learning_rate=6e-5,
    weight_decay=0.01,
    schedule="poly",
    power=1.0,
    warmup_steps=1500,
    lr_multipliers=(("decode_head/", 10.0),),
  )
  config.reference = reference
  return config
