"""Mask2Former, ResNet-50, on Cityscapes panoptic (19 classes, 8 things): the paper's recipe
``maskformer2_R50_bs16_90k`` (Cheng et al. 2022, detectron2 configs).

Reference: PQ 62.1, AP 37.3, mIoU 77.5 on val, single-scale (the paper's Table 4 / model zoo).

Recipe: images scaled by 0.5-2.0 (the paper's shortest edge 512-2048 of 1024x2048 images),
512x1024 crops, flips, photometric distortion; batch 16; 90k steps; the loss on the panoptic
segments; `mask2former_recipe` for the model and optimizer; evaluation on whole 1024x2048
images with the paper's panoptic thresholds and top-100 instances.

  python experiments/plan.py --config=configs/mask2former_cityscapes.py --topology=v5e:4x8
"""

from segjax.recipes import MMSEG_PHOTOMETRIC, mask2former_recipe


def get_config(loss: str = "points"):
  config = mask2former_recipe(
    "tfds:cityscapes_panoptic",
    loss=loss,
    crop_size=(512, 1024),
    batch_size=16,
    num_train_steps=90_000,
    train_pp=f"random_scale(0.5, 2.0)|random_crop((512, 1024))|flip_lr|{MMSEG_PHOTOMETRIC}",
    eval_pp="",
    target="panoptic",
    reference="PQ 62.1, AP 37.3, mIoU 77.5 (Mask2Former)",
  )
  config.eval_batch_size = 8
  return config
