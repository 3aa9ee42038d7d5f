r"""A click model for nuclei: the microscopy recipe's UNet made interactive, trained as RITM trains.

  python experiments/evaluate_interactive.py --source=/tmp/wheels/stardist-0.9.2-*.whl \
      --workdir=/tmp/segjax/clicks --click_config=configs/interactive_microscopy.py

(evaluate_interactive.py writes the Data Science Bowl frame's halves as a folder dataset, trains
this config on the left half in ``WORKDIR/click_run`` and measures it in clicks per nucleus of the
right half beside painting disks; or train it on any folder with ``instances/``:
``experiments/train.py --config=configs/interactive_microscopy.py --config.data.root=DATA``.)

The recipe: ``configs/unet_microscopy.py:cpu``'s data, crops and augmentation (128x128 crops of
192x192 patches, scale 0.75-1.33, flips, quarter turns, intensity jitter; percentile
normalisation), its UNet (8 features, 4 poolings) made interactive (``interactive``: the image,
positive and negative click disks of radius 3 and the previous mask), CE + Dice on the clicked
nucleus, RITM's click simulation (``iterative_clicks``: 1-3 positive and 0-3 negative first clicks,
negatives within 10 pixels of the nucleus, then 0-3 clicks on the model's own errors), AdamW 3e-3
with cosine decay over 1,500 steps of batch 8. Evaluated by clicks on the whole held-out frame
(``config.evals.clicks``: the standard protocol, at most 20 clicks; 8 nuclei per forward pass).
"""

import os

import ml_collections

from segjax.config_defaults import load_config

CLICK_RADIUS = 3  # pixels; the training clicks and the evaluation's are drawn alike


def get_config():
  here = os.path.dirname(os.path.abspath(__file__))
  config = load_config(os.path.join(here, "unet_microscopy.py"), "cpu")
  config.data.train_pp = (
    "random_scale(0.75, 1.33)|random_crop(128)|flip_lr|random_rot90|photometric(0.1)"
  )
  config.model = ml_collections.ConfigDict(
    dict(
      name="interactive",
      base="unet",
      base_kwargs=dict(features=8, depth=4),
      fusion="concat",
      image_channels=1,  # grey frames
      dtype="float32",
      pretrained="",
    )
  )
  config.loss = "cross_entropy + dice_loss"
  config.losses = ()
  config.postprocess = "argmax"
  config.step_inputs = (
    f"iterative_clicks(radius={CLICK_RADIUS}, max_positive=3, max_negative=3, "
    "negative_band=10, max_iterations=3)"
  )
  config.train_metrics = ("object_iou",)
  config.evals = dict(
    clicks=dict(
      type=f"interactive(radius={CLICK_RADIUS}, max_clicks=20, object_batch=8)",
      split="validation",
      every_steps=0,
    )
  )
  return config
