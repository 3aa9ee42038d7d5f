"""Defaults shared by the configs: ``base_config()`` (every key a run reads, documented) and
``shapes_config()`` for the built-in ``shapes`` dataset (``configs/*_shapes.py``); the published
benchmark recipes are built in `segjax.recipes`."""
import ml_collections
from ml_collections.config_dict import FieldReference
from ml_collections.config_dict import placeholder

from segjax.data.descriptor import IMAGENET_MEAN, IMAGENET_STD

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
      # Evaluation runs each image at its own size (grouped by size); these pad each image
      # (padding ignored by the metrics): to at least (H, W), or up to a multiple of an int,
      # the image mirrored ("reflect") or filled with the mean ("constant").
      eval_pad_to=placeholder(tuple), eval_size_multiple=placeholder(int), eval_pad_mode="reflect",
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
