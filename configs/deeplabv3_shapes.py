"""DeepLabV3 (dilated ResNet-18 at 1/4 width, output stride 8, ASPP, auxiliary FCN head) on the
built-in ``shapes`` dataset.

  python experiments/train.py --config=configs/deeplabv3_shapes.py --workdir=/tmp/segjax/deeplabv3

Start the backbone from torchvision weights with ``--config.model.pretrained=resnet18.safetensors``
(full width only: ``--config.model.width=64``). Result: see README, "Models".
"""

from segjax.config_defaults import shapes_config


def get_config():
  config = shapes_config()
  config.model = dict(
    name="deeplabv3",
    backbone="resnet18",
    width=16,
    output_stride=8,
    aspp_features=64,
    aux_head=True,
    dtype="float32",
    pretrained="",
  )
  config.losses = (("aux_logits", "semantic", "cross_entropy + dice_loss", 0.4),)  # the FCN head
  config.num_train_steps = 1500
  return config
