r"""DeepLabV3+, ResNet-101 at output stride 8, on Cityscapes: MMSegmentation's recipe
``deeplabv3plus_r101-d8_4xb2-80k_cityscapes-512x1024``.

Reference: 80.97 mIoU on val, single-scale (82.03 multi-scale + flip), MMSegmentation model zoo
(configs/deeplabv3plus/README.md). MMSegmentation's head uses depthwise-separable convolutions in
ASPP and decoder; segjax's DeepLabV3+ uses regular ones (the paper's Xception-65 model reached
82.1 on test with extra data, Chen et al. 2018).

Recipe: as configs/deeplabv3_cityscapes.py (512x1024 crops, scale 0.5-2.0, flips, photometric
distortion, batch 8, 80k steps of SGD 0.01 poly, auxiliary FCN head 0.4, whole-image
evaluation), with the decoder on the stride-4 features.

  python experiments/plan.py --config=configs/deeplabv3plus_cityscapes.py --topology=v5e:4x8
  python experiments/train.py --config=configs/deeplabv3plus_cityscapes.py --workdir=... \
      --config.model.pretrained=resnet101.safetensors --distributed=on
"""

from segjax.recipes import mmseg_deeplab_recipe


def get_config():
  return mmseg_deeplab_recipe(
    "deeplabv3plus",
    "tfds:cityscapes",
    crop_size=(512, 1024),
    batch_size=8,
    num_train_steps=80_000,
    reference="80.97 mIoU (MMSegmentation)",
  )
