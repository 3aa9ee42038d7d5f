"""DeepLabV3, ResNet-101 at output stride 8, on PASCAL VOC 2012 with the SBD-augmented training
set (``trainaug``, 10,582 images; 21 classes): MMSegmentation's recipe
``deeplabv3_r101-d8_4xb4-20k_voc12aug-512x512``.

Reference: 78.70 mIoU on val, single-scale (79.95 multi-scale + flip), MMSegmentation model zoo
(configs/deeplabv3/README.md). The paper (Chen et al. 2017) reports 77.21 on val at output stride
16 (79.77 with multi-scale, flip and COCO pretraining, Table 5).

Recipe: images resized to fit 2048x512, scaled by 0.5-2.0, 512x512 crops, flips, photometric
distortion; batch 16; 20k steps of SGD (lr 0.01, poly 0.9 to 1e-4); auxiliary FCN head 0.4.
Evaluation resizes the long side to 512 and pads to 512x512. The data: segjax's
``voc2012_segmentation`` builder (segjax/data/builders.py) over VOCdevkit/VOC2012 with
SegmentationClassAug.

  python experiments/plan.py --config=configs/deeplabv3_voc.py --topology=v5e:4x8
"""

from segjax.recipes import mmseg_deeplab_recipe


def get_config():
  config = mmseg_deeplab_recipe(
    "deeplabv3",
    "tfds:voc",
    crop_size=512,
    batch_size=16,
    num_train_steps=20_000,
    resize_long=512,
    train_split="trainaug",
    reference="78.70 mIoU (MMSegmentation)",
  )
  config.eval_batch_size = 16
  return config
