r"""A click model on the built-in ``shapes`` dataset: each disc, triangle and square an object.

  python experiments/train.py --config=configs/interactive_shapes.py \
      --workdir=/tmp/segjax/interactive_shapes

The recipe: the quickstart's UNet (features 8, depth 4) made interactive (``interactive``: image,
positive and negative click disks of radius 3 and the previous mask as input, two classes:
object and background), trained as RITM trains (``config.step_inputs = "iterative_clicks"``): one
object per scene, 1-3 positive and 0-3 negative first clicks, then 0-3 clicks at the errors of
the model's own prediction without gradient; normalised focal loss is RITM's, here CE + Dice as
in the quickstart. Evaluated by clicks (``config.evals.clicks``, type ``interactive``: the
standard protocol, NoC@85/90 and the mean IoU after k clicks) on the test scenes.
"""

import ml_collections

from segjax.config_defaults import shapes_config

CLICK_RADIUS = 3  # pixels; the training clicks and the evaluation's are drawn alike


def get_config():
  config = shapes_config()
  config.model = ml_collections.ConfigDict(
    dict(
      name="interactive",
      base="unet",
      base_kwargs=dict(features=8, depth=4),
      fusion="concat",
      dtype="float32",
      pretrained="",
    )
  )
  config.step_inputs = (
    f"iterative_clicks(radius={CLICK_RADIUS}, max_positive=3, max_negative=3, "
    "negative_band=12, max_iterations=3)"
  )
  config.train_metrics = ("object_iou",)
  config.optimizer.learning_rate = 1e-2
  config.num_train_steps = 2000
  config.evals = dict(
    clicks=dict(
      type=f"interactive(radius={CLICK_RADIUS}, max_clicks=20)", split="test", every_steps=0
    )
  )
  return config
