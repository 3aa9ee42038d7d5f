"""DeepLabV3+ (dilated ResNet-18 at 1/4 width, output stride 16, ASPP, decoder on the stride-4
features) on the built-in ``shapes`` dataset.

  python experiments/train.py --config=configs/deeplabv3plus_shapes.py --workdir=/tmp/segjax/dlv3p

Result: see README, "Models"; it is also the trunk of configs/hmsa_shapes.py.
"""

from segjax.config_defaults import shapes_config


def get_config():
  config = shapes_config()
  config.model = dict(
    name="deeplabv3plus",
    backbone="resnet18",
    width=16,
    output_stride=16,
    aspp_features=64,
    decoder_features=64,
    dtype="float32",
    pretrained="",
  )
  config.num_train_steps = 1500
  return config
