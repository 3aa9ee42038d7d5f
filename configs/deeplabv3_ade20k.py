"""DeepLabV3, ResNet-101 at output stride 8, on ADE20K (tfds ``scene_parse150``, 150 classes):
MMSegmentation's recipe ``deeplabv3_r101-d8_4xb4-160k_ade20k-512x512``.

Reference: 45.00 mIoU on val, single-scale (46.66 multi-scale + flip), MMSegmentation model zoo
(configs/deeplabv3/README.md).

Recipe: images resized to fit 2048x512, then scaled by 0.5-2.0, 512x512 crops, flips, photometric
distortion; batch 16; 160k steps of SGD (lr 0.01, momentum 0.9, weight decay 5e-4, poly 0.9 to
1e-4); auxiliary FCN head 0.4. Evaluation resizes the long side to 512 and pads to 512x512
(deeplab2's protocol; MMSegmentation resizes the short side to 512 and scores at the original
label resolution).

  python experiments/plan.py --config=configs/deeplabv3_ade20k.py --topology=v5e:4x8
"""

from segjax.recipes import mmseg_deeplab_recipe


def get_config():
  config = mmseg_deeplab_recipe(
    "deeplabv3",
    "tfds:scene_parse150",
    crop_size=512,
    batch_size=16,
    num_train_steps=160_000,
    resize_long=512,
    reference="45.00 mIoU (MMSegmentation)",
  )
  config.eval_batch_size = 16
  return config
