"""Panoptic-DeepLab, ResNet-50 at output stride 32, on COCO panoptic (133 classes, 80 things):
deeplab2's recipe ``configs/coco/panoptic_deeplab/resnet50_os32``.

Reference: PQ 34.1 (official panopticapi), mIoU 54.75, mask AP 18.50 on val2017, single-scale
(deeplab2 model zoo, g3doc/projects/panoptic_deeplab.md, COCO table: ResNet-50, output stride
32, 641x641).

Recipe: images resized so the long side is 641, scaled by 0.5-1.5, 641x641 crops, flips (deeplab2
adds a mild AutoAugment policy, not reproduced here); targets with small instances weighted 3;
batch 64; 200k steps of Adam (lr 5e-4, 2,000 warm-up steps, poly 0.9); the loss of
configs/panoptic_deeplab_cityscapes.py; evaluation at long side 641 padded to 641x641;
post-processing: centre threshold 0.1, NMS kernel 41, 200 centres, stuff areas under 4096 px void.

  python experiments/plan.py --config=configs/panoptic_deeplab_coco.py --topology=v5e:4x8
"""

from segjax.recipes import panoptic_deeplab_recipe


def get_config():
  config = panoptic_deeplab_recipe(
    "tfds:coco_panoptic",
    crop_size=641,
    batch_size=64,
    num_train_steps=200_000,
    learning_rate=5e-4,
    warmup_steps=2000,
    resize_pp="resize_keep_ratio(long=641)|",
    scales=(0.5, 1.5),
    eval_pp="resize_keep_ratio(long=641)|pad_to(641)",
    nms_kernel=41,
    stuff_area=4096,
    reference="PQ 34.1, AP 18.5, mIoU 54.8 (deeplab2)",
  )
  config.eval_batch_size = 16
  return config
