"""Panoptic-DeepLab, ResNet-50 at output stride 32, on Cityscapes panoptic (19 classes, 8 thing
classes): deeplab2's recipe ``configs/cityscapes/panoptic_deeplab/resnet50_os32``.

Reference: PQ 60.24, mask AP 30.01, mIoU 76.36 on val, single-scale (deeplab2 model zoo,
g3doc/projects/panoptic_deeplab.md; the PyTorch reference implementation bowenc0221/
panoptic-deeplab reports PQ 59.8, AP 26.9, mIoU 78.6 for R50-os32).

Recipe: 1025x2049 crops after scaling by 0.5-2.0, flips; targets with centre Gaussians of
sigma 8 and small instances (< 4096 px) weighted 3; batch 8; 60k steps of Adam (lr 2.5e-4, poly
0.9); loss = cross-entropy on the hardest 20% of pixels (with the small-instance weights) +
200 × centre MSE + 0.01 × offset L1; post-processing: centre threshold 0.1, NMS kernel 13, 200
centres, stuff areas under 2048 px void; evaluation on whole images padded to 1025x2049. The data: segjax's ``cityscapes_panoptic`` builder
(segjax/data/builders.py) over leftImg8bit/ and gtFine/.

  python experiments/plan.py --config=configs/panoptic_deeplab_cityscapes.py --topology=v5e:4x8
"""

from segjax.recipes import panoptic_deeplab_recipe


def get_config():
  return panoptic_deeplab_recipe(
    "tfds:cityscapes_panoptic",
    crop_size=(1025, 2049),
    batch_size=8,
    num_train_steps=60_000,
    learning_rate=2.5e-4,
    warmup_steps=0,
    resize_pp="",
    scales=(0.5, 2.0),
    eval_pp="pad_to((1025, 2049))",
    nms_kernel=13,
    stuff_area=2048,
    reference="PQ 60.24, AP 30.0, mIoU 76.4 (deeplab2)",
  )
