"""Defaults shared by the configs: ``shapes_config()`` for the built-in ``shapes`` dataset
(``configs/*_shapes.py``) and ``recipe_config()`` for the published benchmark recipes."""
import ml_collections
from ml_collections.config_dict import FieldReference
from ml_collections.config_dict import placeholder

from segjax.data.descriptor import IMAGENET_MEAN, IMAGENET_STD

# MMSegmentation's PhotoMetricDistortion without hue: brightness 32/255, contrast and saturation
# 0.5-1.5 (segjax/data/ops.py, photometric).
MMSEG_PHOTOMETRIC = "photometric(0.125, 0.5, 0.5)"
# Panoptic-DeepLab's loss (deeplab2): cross-entropy on the hardest 20% of pixels with the
# small-instance weights of the panoptic_targets op, 200 x centre MSE, 0.01 x offset L1.
PANOPTIC_DEEPLAB_LOSSES = (
    ("logits", "semantic", "cross_entropy(top_k_percent=0.2)", 1.0, "semantic_weight"),
    ("center", "center", "weighted_mse", 200.0, "center_weight"),
    ("offset", "offset", "weighted_l1", 0.01, "offset_weight"))


def panoptic_deeplab_postprocess(nms_kernel: int, stuff_area: int) -> str:
  """deeplab2's grouping (centre threshold 0.1, 200 centres) and COCO-scored instances."""
  return (f"argmax|panoptic_deeplab(center_threshold=0.1, nms_kernel={nms_kernel}, top_k=200, "
          f"stuff_area={stuff_area})|scored_instances")


def base_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with neutral defaults; the configs set data and model."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.reference = ""  # recipes: the published number they aim at (README's plan table)
  config.num_devices = 0  # 0: all devices
  # Data parallel over all devices; fsdp > 1 also splits parameters and optimizer state (arrays of
  # at least fsdp_min_size elements) over groups of fsdp devices (segjax/sharding.py).
  config.sharding = ml_collections.ConfigDict(dict(fsdp=1, fsdp_min_size=4096))
  config.data = ml_collections.ConfigDict(dict(
      name="", data_dir=placeholder(str), train_split="train",
      # Training examples: composable ops (segjax/data/ops.py), ending in crop_size images.
      crop_size=(512, 512), train_pp="", eval_pp="", channels=3, normalization="mean_std",
      mean=IMAGENET_MEAN, std=IMAGENET_STD,
      # The ignore label is the dataset's (its descriptor: classes.json, the catalogue), not a
      # config key.
      process_data="split"))  # or "stream": batches independent of the process count
  config.model = ml_collections.ConfigDict(dict(name="", dtype="float32", pretrained=""))
  # Fine-tuning: every model variable from this trained run directory (or exported .safetensors);
  # a fresh optimizer, step 0.
  config.init_from = ""
  # The objective: config.loss on (logits, semantic), plus the terms of config.losses, each
  # (output, target, loss, weight[, weight_key]) (segjax/losses/terms.py).
  # Any type: a string, a function, or a list of (loss, weight[, kwargs]) (the command line sets
  # strings: --config.loss="cross_entropy + 0.5 * dice_loss").
  config.loss = FieldReference("cross_entropy", field_type=object)
  config.losses = ()
  config.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.01, momentum=0.9, weight_decay=5e-4, schedule="poly",
      power=0.9, end_factor=0.0, warmup_steps=0, grad_clip_norm=0.0))
  config.batch_size = 8
  config.num_train_steps = 1000
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 2
  config.checkpoint_async = True  # orbax writes in the background while training goes on
  config.eval_every_steps = 0  # > 0: also evaluate during training
  # Training metrics, summed on the device between log steps: registered names or functions
  # (outputs, batch, *, num_classes, ignore_label) -> sums (segjax/train_metrics.py).
  config.train_metrics = ("confusion",)
  config.device_prefetch = 2  # global batches sent to the devices ahead of the step
  config.profile_steps = ()  # (first, last): a JAX profiler trace of those steps in WORKDIR/profile
  config.eval_splits = ("validation",)
  config.eval_batch_size = 8
  # Test-time augmentation of evaluation (semantic chains): "" (none), "flip" (left-right) or
  # "d4" (quarter turns x flips, 8 passes); probabilities are averaged (segjax/inference.py).
  config.eval_tta = ""
  # From outputs to predictions, in evaluation, prediction and export (segjax/postprocess).
  config.postprocess = "argmax"
  # Prediction: pictures of a split, and pre-labels of any images (experiments/predict.py --input).
  config.predict = ml_collections.ConfigDict(dict(
      split="validation", num_images=8,
      window=placeholder(tuple), overlap=0.25, blend="gaussian", pad_mode="reflect", batch_size=8,
      scales=(1.0,), flip=False,
      model_scales=placeholder(tuple),  # HMSA: its own learned combination of these scales
      uncertainty="entropy",
      # Pre-labels: stuff regions too (None: only for datasets without thing classes).
      export_stuff=placeholder(bool),
      # Cut-outs (--format=cutout, segjax/cutout.py): which classes (names or ids; empty: all but
      # the background), edge refinement ("guided" on the image, or "none"), the guided filter's
      # window radius (pixels) and regulariser, and a Gaussian feather (pixels; 0: none).
      cutout_classes=(), cutout_refine="guided", cutout_radius=8, cutout_eps=1e-3,
      cutout_feather=0.0,
      # Georeferenced rasters (--format=geotiff|geojson|gpkg, segjax/geo.py): the bands the model
      # reads (1-based; empty: the first data.channels), a probability GeoTIFF beside the classes,
      # and the polygons' simplification tolerance in map units (0: pixel outlines).
      bands=(), probabilities=False, simplify=0.0))
  return config


def shapes_config() -> ml_collections.ConfigDict:
  """The quickstart's data, loss, optimizer and schedule; a config then sets ``config.model``."""
  config = base_config()
  config.data.update(dict(
      name="shapes", image_size=64, num_train=3000, num_validation=200, num_test=200,
      dataset_seed=0, max_things=8, radii=(0.09, 0.28), thin=0.0,  # (docs/data.md)
      crop_size=(64, 64),
      train_pp="flip_lr"))
  config.model = ml_collections.ConfigDict(dict(name="unet", features=8, depth=4, dtype="float32",
                                                pretrained=""))
  config.loss = "cross_entropy + dice_loss"
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=5e-3, weight_decay=1e-4, schedule="cosine", warmup_steps=100,
      grad_clip_norm=1.0))
  config.num_train_steps = 2300
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.eval_batch_size = 50
  config.predict.split = "test"
  return config


def recipe_config(dataset: str, *, crop_size, batch_size: int, num_train_steps: int,
                  train_pp: str, eval_pp: str = "", train_split: str = "train",
                  eval_split: str = "validation") -> ml_collections.ConfigDict:
  """A benchmark recipe: a tfds dataset (``"tfds:cityscapes"``, ...), the paper's crop, batch,
  schedule length and augmentation; SGD (momentum 0.9, weight decay 5e-4, poly 0.9) and
  bfloat16 computation with float32 parameters, as set here, unless the config changes them."""
  config = base_config()
  config.data.update(dict(name=dataset, crop_size=tuple(crop_size), train_pp=train_pp,
                          eval_pp=eval_pp, train_split=train_split))
  config.model.dtype = "bfloat16"
  config.batch_size = batch_size
  config.num_train_steps = num_train_steps
  config.eval_splits = (eval_split,)
  config.predict.split = eval_split
  return config


def _random_crop(crop: tuple[int, int]) -> str:
  return f"random_crop({crop[0] if crop[0] == crop[1] else crop})"


def mmseg_deeplab_recipe(model: str, dataset: str, *, crop_size: int | tuple[int, int],
                         batch_size: int, num_train_steps: int, reference: str,
                         resize_long: int | None = None, **kwargs) -> ml_collections.ConfigDict:
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
      dataset, crop_size=crop, batch_size=batch_size, num_train_steps=num_train_steps,
      train_pp=f"{resize}random_scale(0.5, 2.0)|{_random_crop(crop)}|flip_lr|{MMSEG_PHOTOMETRIC}",
      **kwargs)
  config.model.update(dict(name=model, backbone="resnet101", output_stride=8, aux_head=True))
  config.losses = (("aux_logits", "semantic", "cross_entropy", 0.4),)
  config.optimizer.end_factor = 0.01  # poly down to 1e-4
  config.reference = reference
  return config


def panoptic_deeplab_recipe(dataset: str, *, crop_size: int | tuple[int, int], batch_size: int,
                            num_train_steps: int, learning_rate: float, warmup_steps: int,
                            resize_pp: str, scales: tuple[float, float], eval_pp: str,
                            nms_kernel: int, stuff_area: int,
                            reference: str) -> ml_collections.ConfigDict:
  """deeplab2's Panoptic-DeepLab ResNet-50 recipe at output stride 32: ``resize_pp`` then random
  scale over ``scales``, crop, flip and the panoptic targets (centre Gaussians of sigma 8,
  instances under 4096 pixels weighted 3); the loss `PANOPTIC_DEEPLAB_LOSSES`; Adam with poly
  0.9 decay; `panoptic_deeplab_postprocess` grouping."""
  crop = (crop_size,) * 2 if isinstance(crop_size, int) else tuple(crop_size)
  config = recipe_config(
      dataset, crop_size=crop, batch_size=batch_size, num_train_steps=num_train_steps,
      train_pp=(f"{resize_pp}random_scale{tuple(scales)}|{_random_crop(crop)}|flip_lr|"
                "panoptic_targets(sigma=8.0, small_instance_area=4096, small_instance_weight=3.0)"),
      eval_pp=eval_pp)
  config.model.update(dict(name="panoptic_deeplab", backbone="resnet50", output_stride=32))
  config.loss = ""
  config.losses = PANOPTIC_DEEPLAB_LOSSES
  config.optimizer = dict(name="adam", learning_rate=learning_rate, schedule="poly", power=0.9,
                          end_factor=0.0, warmup_steps=warmup_steps, grad_clip_norm=0.0)
  config.postprocess = panoptic_deeplab_postprocess(nms_kernel=nms_kernel, stuff_area=stuff_area)
  config.reference = reference
  return config


def mask2former_recipe(dataset: str, *, crop_size: int | tuple[int, int], batch_size: int,
                       num_train_steps: int, train_pp: str, eval_pp: str, target: str,
                       reference: str, loss: str = "points",
                       **optimizer) -> ml_collections.ConfigDict:
  """The Mask2Former ResNet-50 recipe (Cheng et al. 2022; the paper's detectron2 configs): 100
  queries, 6 deformable encoder layers, 9 decoder layers, 8 heads, 256 channels; the paper's
  loss on the segments of ``target`` (``"panoptic"`` or ``"semantic"``) with 12,544 points and
  deep supervision; AdamW 1e-4, weight decay 0.05, the backbone at 0.1× the rate, gradient
  clipping at 0.01 over the model, poly 0.9 without warm-up (``optimizer`` overrides);
  post-processing with the paper's thresholds; bfloat16 computation. ``loss="dense"`` (a config
  file's argument, ``--config=configs/mask2former_coco.py:dense``): the mask losses and matching
  costs on every pixel of the stride-4 masks instead of 12,544 sampled points (no gathers)."""
  if loss not in ("points", "dense"):
    raise ValueError(f"mask2former recipe: loss {loss!r} is not 'points' (the paper's 12,544 "
                     "sampled points) or 'dense' (every mask pixel)")
  points = 12544 if loss == "points" else 0
  crop = (crop_size,) * 2 if isinstance(crop_size, int) else tuple(crop_size)
  config = recipe_config(dataset, crop_size=crop, batch_size=batch_size,
                         num_train_steps=num_train_steps, train_pp=train_pp, eval_pp=eval_pp)
  config.model = ml_collections.ConfigDict(dict(
      name="mask2former", backbone="resnet50", num_queries=100, dtype="bfloat16", remat=False,
      pretrained=""))
  config.loss = ""
  config.losses = ((("class_logits", target,
                     f"mask2former_loss(max_targets=100, num_points={points})", 1.0)),)
  config.train_metrics = ("mask_confusion",)  # at the masks' stride-4 resolution
  config.optimizer = ml_collections.ConfigDict({**dict(
      name="adamw", learning_rate=1e-4, weight_decay=0.05, schedule="poly", power=0.9,
      end_factor=0.0, warmup_steps=0, grad_clip_norm=0.01,
      lr_multipliers=(("pixel_level_module/encoder/", 0.1),)), **optimizer})
  config.postprocess = ("argmax|mask_panoptic|mask_instances" if target == "panoptic"
                        else "argmax")
  config.reference = reference
  return config


def segformer_recipe(dataset: str, *, variant: str, crop_size: int | tuple[int, int],
                     batch_size: int, num_train_steps: int, train_pp: str, eval_pp: str,
                     reference: str) -> ml_collections.ConfigDict:
  """The SegFormer recipe (Xie et al. 2021; MMSegmentation's ``segformer_mit-*`` configs): AdamW
  6e-5, weight decay 0.01, the decode head at 10× the rate, 1,500 steps of linear warm-up then
  poly 1.0; stochastic depth 0.1; cross-entropy; bfloat16 computation. The encoder starts from
  ImageNet weights (Hugging Face ``nvidia/mit-b0`` via `segjax.models.from_transformers`)."""
  crop = (crop_size,) * 2 if isinstance(crop_size, int) else tuple(crop_size)
  config = recipe_config(dataset, crop_size=crop, batch_size=batch_size,
                         num_train_steps=num_train_steps, train_pp=train_pp, eval_pp=eval_pp)
  config.model = ml_collections.ConfigDict(dict(name="segformer", variant=variant,
                                                drop_path_rate=0.1, dtype="bfloat16",
                                                pretrained=""))
  config.loss = "cross_entropy"
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=6e-5, weight_decay=0.01, schedule="poly", power=1.0,
      end_factor=0.0, warmup_steps=1500, grad_clip_norm=0.0,
      lr_multipliers=(("decode_head/", 10.0),)))
  config.reference = reference
  return config


def load_config(path: str, argument: str | None = None) -> ml_collections.ConfigDict:
  """``get_config()`` of a config file (``configs/<name>.py``); with ``argument``,
  ``get_config(argument)`` (what ``--config=configs/<name>.py:<argument>`` selects)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()
