"""SegNet on the built-in ``shapes`` dataset.

  python experiments/train.py --config=configs/segnet_shapes.py --workdir=/tmp/segjax/segnet_shapes

VGG16-BN encoder at 1/8 width (``width=8``) and the mirrored max-unpooling decoder; the quickstart's
data, loss and schedule (segjax/config_defaults.py). Result: see README, "Models".
"""
from segjax.config_defaults import shapes_config


def get_config():
  config = shapes_config()
  config.model = dict(name="segnet", width=8, dtype="float32")
  config.num_train_steps = 1500
  return config
