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
from segjax.config_defaults import PANOPTIC_DEEPLAB_LOSSES
from segjax.config_defaults import panoptic_deeplab_postprocess
from segjax.config_defaults import recipe_config


def get_config():
  config = recipe_config(
      "tfds:coco_panoptic", crop_size=(641, 641), batch_size=64, num_train_steps=200_000,
      train_pp=("resize_keep_ratio(long=641)|random_scale(0.5, 1.5)|random_crop(641)|flip_lr|"
                "panoptic_targets(sigma=8.0, small_instance_area=4096, small_instance_weight=3.0)"),
      eval_pp="resize_keep_ratio(long=641)|pad_to(641)")
  config.model.update(dict(name="panoptic_deeplab", backbone="resnet50", output_stride=32))
  config.loss = ""
  config.losses = PANOPTIC_DEEPLAB_LOSSES
  config.optimizer = dict(name="adam", learning_rate=5e-4, schedule="poly", power=0.9,
                          end_factor=0.0, warmup_steps=2000, grad_clip_norm=0.0)
  config.postprocess = panoptic_deeplab_postprocess(nms_kernel=41, stuff_area=4096)
  config.eval_batch_size = 16
  config.reference = "PQ 34.1, AP 18.5, mIoU 54.8 (deeplab2)"
  return config
