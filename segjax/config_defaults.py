"""Defaults shared by the configs: ``base_config()`` (every key a run reads, documented) and
``shapes_config()`` for the built-in ``shapes`` dataset (``configs/*_shapes.py``); the published
benchmark recipes are built in `segjax.recipes`."""

import ml_collections
from ml_collections.config_dict import FieldReference
from ml_collections.config_dict import placeholder

from segjax.data.descriptor import IMAGENET_MEAN, IMAGENET_STD

# Every key the registered optimizers and schedules read (segjax/optim.py), with the values they
# take when a config does not change them.
OPTIMIZER = dict(
  name="adamw",
  learning_rate=1e-3,
  weight_decay=0.0,
  momentum=0.9,
  nesterov=False,  # sgd
  b1=0.9,
  b2=0.999,  # adamw
  schedule="cosine",
  warmup_steps=0,
  end_factor=0.0,
  power=0.9,  # poly
  boundaries=(),
  gamma=0.1,  # step: x gamma at each of these fractions of the run
  grad_clip_norm=0.0,  # > 0: clip the global gradient norm
  lr_multipliers=(),
)  # ((path pattern, factor), ...): per-parameter-group rates


def optimizer_config(**settings) -> ml_collections.ConfigDict:
  """``config.optimizer``: `OPTIMIZER` updated with ``settings``, so that every key the optimizers
  read stays declared (and settable from the command line) in a config that picks its own
  optimizer. An unknown key is an error here; a user's own optimizer adds its keys to the
  result."""
  unknown = sorted(set(settings) - set(OPTIMIZER))
  if unknown:
    raise KeyError(f"optimizer_config: unknown key(s) {unknown}; the keys are {sorted(OPTIMIZER)}")
  return ml_collections.ConfigDict({**OPTIMIZER, **settings})


def data_config(**settings) -> ml_collections.ConfigDict:
  """``config.data``: every key the input pipeline reads, with neutral values, updated with
  ``settings`` (a dataset's own keys, such as ``shapes``' ``image_size``, are added)."""
  data = ml_collections.ConfigDict(
    dict(
      name="",
      data_dir=placeholder(str),
      train_split="train",
      # Training examples: composable ops (segjax/data/ops.py), ending in crop_size images.
      crop_size=(512, 512),
      train_pp="",
      eval_pp="",
      channels=3,
      # "mean_std" (mean, std), or "percentile" (per image, between these percentiles).
      normalization="mean_std",
      mean=IMAGENET_MEAN,
      std=IMAGENET_STD,
      percentiles=(1.0, 99.0),
      # Evaluation runs each image at its own size (grouped by size); these pad each image
      # (padding ignored by the metrics): to at least (H, W), or up to a multiple of an int,
      # the image mirrored ("reflect") or filled with the mean ("constant").
      eval_pad_to=placeholder(tuple),
      eval_size_multiple=placeholder(int),
      eval_pad_mode="reflect",
      # Training on a grid of patches of every image (high-resolution images): their size and
      # stride (default: the size), the fraction of labelled pixels a patch needs, and the share
      # of batches drawn class-balanced (segjax/data/patches.py).
      patch_size=placeholder(tuple),
      patch_stride=placeholder(tuple),
      min_labelled_fraction=0.0,
      class_balanced=0.0,
      # Folder datasets (name="folder"): the folder, class names and thing classes (default: its
      # classes.json), and whether bad files are skipped (listed) instead of stopping.
      root="",
      classes=(),
      thing_classes=(),
      skip_bad=False,
      # The ignore label is the dataset's (its descriptor: classes.json, the catalogue), not a
      # config key.
      process_data="split",  # or "stream": batches independent of the process count
      prefetch=2,
    )
  )  # batches tf.data prepares ahead
  data.update(settings)
  return data


def base_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with neutral defaults; the configs set data and model."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.reference = ""  # recipes: the published number they aim at (README's plan table)
  config.num_devices = 0  # 0: all devices
  # Data parallel over all devices; fsdp > 1 also splits parameters and optimizer state (arrays of
  # at least fsdp_min_size elements) over groups of fsdp devices (segjax/sharding.py).
  config.sharding = ml_collections.ConfigDict(dict(fsdp=1, fsdp_min_size=4096))
  config.data = data_config()
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
  config.optimizer = optimizer_config(
    name="sgd", learning_rate=0.01, weight_decay=5e-4, schedule="poly"
  )
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
  # Inputs the train step makes of each batch with the model being trained (segjax/step_inputs.py):
  # "" none; "iterative_clicks(...)": RITM's click simulation for click models.
  config.step_inputs = ""
  config.device_prefetch = 2  # global batches sent to the devices ahead of the step
  config.profile_steps = ()  # (first, last): a JAX profiler trace of those steps in WORKDIR/profile
  config.eval_splits = ("validation",)
  config.eval_batch_size = 8
  config.eval_mask_ap = True  # COCO mask AP too, where the chain makes instances
  # Named evaluations (segjax/evaluation.py): {name: dict(type=registered evaluator(s), split=,
  # every_steps=, inference=dict(overrides of config.inference))}; empty: one per eval split.
  config.evals = ml_collections.ConfigDict()
  # The one inference protocol of evaluation and prediction (segjax.inference.Spec): a padded
  # sliding window (None: whole images), multi-scale and "flip" / "d4" test-time augmentation
  # (probabilities averaged), and the scales a model combines itself (HMSA: scales=...).
  config.inference = ml_collections.ConfigDict(
    dict(
      window=placeholder(tuple),
      overlap=0.25,
      blend="gaussian",
      pad_mode="reflect",
      window_batch=8,
      scales=(1.0,),
      tta="",
      model_scales=placeholder(tuple),
    )
  )
  # From outputs to predictions, in evaluation, prediction and export (segjax/postprocess).
  config.postprocess = "argmax"
  # Prediction: pictures of a split, and pre-labels of any images (experiments/predict.py --input).
  config.predict = ml_collections.ConfigDict(
    dict(
      split="validation",
      num_images=8,
      uncertainty="entropy",
      # Pre-labels: stuff regions too (None: only for datasets without thing classes).
      export_stuff=placeholder(bool),
      # Cut-outs (--format=cutout, segjax/cutout.py): which classes (names or ids; empty: all but
      # the background), edge refinement ("guided" on the image, or "none"), the guided filter's
      # window radius (pixels) and regulariser, and a Gaussian feather (pixels; 0: none).
      cutout_classes=(),
      cutout_refine="guided",
      cutout_radius=8,
      cutout_eps=1e-3,
      cutout_feather=0.0,
      # Georeferenced rasters (--format=geotiff|geojson|gpkg, segjax/geo.py): the bands the model
      # reads (1-based; empty: the first data.channels), a probability GeoTIFF beside the classes,
      # and the polygons' simplification tolerance in map units (0: pixel outlines).
      bands=(),
      probabilities=False,
      simplify=0.0,
    )
  )
  return config


def shapes_config() -> ml_collections.ConfigDict:
  """The quickstart's data, loss, optimizer and schedule; a config then sets ``config.model``."""
  config = base_config()
  config.data.update(
    dict(
      name="shapes",
      image_size=64,
      num_train=3000,
      num_validation=200,
      num_test=200,
      dataset_seed=0,
      max_things=8,
      radii=(0.09, 0.28),
      thin=0.0,  # (docs/data.md)
      crop_size=(64, 64),
      train_pp="flip_lr",
    )
  )
  config.model = ml_collections.ConfigDict(
    dict(name="unet", features=8, depth=4, dtype="float32", pretrained="")
  )
  config.loss = "cross_entropy + dice_loss"
  config.optimizer = optimizer_config(
    name="adamw",
    learning_rate=5e-3,
    weight_decay=1e-4,
    schedule="cosine",
    warmup_steps=100,
    grad_clip_norm=1.0,
  )
  config.num_train_steps = 2300
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.eval_batch_size = 50
  config.predict.split = "test"
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
