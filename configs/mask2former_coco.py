"""Mask2Former, ResNet-50, on COCO panoptic (133 classes, 80 things): the paper's recipe
``maskformer2_R50_bs16_50ep`` (Cheng et al. 2022, detectron2 configs).

Reference: PQ 51.9, AP 41.7 (things), mIoU 61.7 on val2017, single-scale (the paper's Table 1 /
model zoo).

Recipe: large-scale jitter — images resized so the long side is 1024, scaled by 0.1-2.0,
1024x1024 crops, flips; batch 16; 50 epochs = 368,750 steps; the learning rate × 0.1 at 88.9% and
96.3% of the run (the paper's steps 327,778 and 355,092); the loss on the panoptic segments;
`mask2former_recipe` for the rest. Evaluation at long side 1024 padded to 1024x1024. The encoder
and decoder layers are rematerialised (``model.remat``): without it one 1024x1024 image per v5e
chip needs 15.78 GiB of temporaries (of 15.75), with it 13.2 GiB (13.7 in all; docs/plans).

  python experiments/plan.py --config=configs/mask2former_coco.py --topology=v5e:4x8
"""

from segjax.recipes import mask2former_recipe


def get_config(loss: str = "points"):
  config = mask2former_recipe(
    "tfds:coco_panoptic",
    loss=loss,
    crop_size=1024,
    batch_size=16,
    num_train_steps=368_750,
    train_pp="resize_keep_ratio(long=1024)|random_scale(0.1, 2.0)|random_crop(1024)|flip_lr",
    eval_pp="resize_keep_ratio(long=1024)|pad_to(1024)",
    target="panoptic",
    reference="PQ 51.9, AP 41.7, mIoU 61.7 (Mask2Former)",
    schedule="step",
    boundaries=(0.889, 0.963),
    gamma=0.1,
  )
  config.eval_batch_size = 8
  config.model.remat = True
  return config
