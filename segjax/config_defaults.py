"""Defaults shared by the configs on the built-in ``shapes`` dataset (``configs/*_shapes.py``)."""
import ml_collections
from ml_collections.config_dict import placeholder


def shapes_config() -> ml_collections.ConfigDict:
  """The quickstart's data, loss, optimizer and schedule; a config then sets ``config.model``."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_devices = 0  # 0: all devices
  # Data parallel over all devices; fsdp > 1 also splits parameters and optimizer state (arrays of
  # at least fsdp_min_size elements) over groups of fsdp devices (segjax/sharding.py).
  config.sharding = ml_collections.ConfigDict(dict(fsdp=1, fsdp_min_size=4096))

  config.data = ml_collections.ConfigDict(dict(
      name="shapes", data_dir=placeholder(str), image_size=64, num_train=3000, num_validation=200, num_test=200,
      dataset_seed=0, max_things=8, train_split="train", shuffle_buffer=3000, cache=True,
      # Training examples: composable ops (segjax/data/ops.py), ending in crop_size images.
      crop_size=(64, 64), train_pp="flip_lr", eval_pp="",
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), ignore_label=255,
      process_data="split"))  # or "stream": batches independent of the process count

  config.model = ml_collections.ConfigDict(dict(name="unet", features=8, depth=4, dtype="float32"))
  # The objective: config.loss on (logits, semantic), plus the terms of config.losses, each
  # (output, target, loss, weight[, weight_key]) (segjax/losses/terms.py).
  config.loss = "cross_entropy + dice_loss"
  config.losses = ()
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=5e-3, weight_decay=1e-4, schedule="cosine", warmup_steps=100,
      grad_clip_norm=1.0))

  config.batch_size = 8
  config.num_train_steps = 2300
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  config.eval_every_steps = 0  # > 0: also evaluate during training
  config.eval_splits = ("validation",)
  config.eval_batch_size = 50

  # From outputs to predictions, in evaluation, prediction and export (segjax/postprocess).
  config.postprocess = "argmax"

  # Prediction: pictures of a split, and pre-labels of any images (experiments/predict.py --input).
  config.predict = ml_collections.ConfigDict(dict(
      split="test", num_images=8,
      window=placeholder(tuple), overlap=0.25, blend="gaussian", pad_mode="reflect", batch_size=8,
      scales=(1.0,), flip=False,
      model_scales=placeholder(tuple),  # HMSA: its own learned combination of these scales
      uncertainty="entropy"))
  return config
