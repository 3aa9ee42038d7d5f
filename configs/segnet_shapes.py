"""SegNet on the built-in ``shapes`` dataset.

  python experiments/train.py --config=configs/segnet_shapes.py --workdir=/tmp/segjax/segnet_shapes

VGG16-BN encoder at 1/4 width (``width=16``), its first three stages (64x64 inputs: five poolings
would leave a 2x2 map), and the mirrored max-unpooling decoder; the quickstart's
data, loss and schedule (segjax/config_defaults.py). Result: see README, "Models".
"""

from segjax.config_defaults import shapes_config


def get_config():
  config = shapes_config()
  config.model = dict(name="segnet", width=16, num_stages=3, dtype="float32")
  config.num_train_steps = 1500
  return config
