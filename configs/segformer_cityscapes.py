"""SegFormer-B0 on Cityscapes (19 classes): MMSegmentation's recipe
``segformer_mit-b0_8xb1-160k_cityscapes-1024x1024`` (Xie et al. 2021).

Reference: 76.2 mIoU on val, single-scale sliding window (the paper's Table 1; MMSegmentation
76.54).

Recipe: images scaled by 0.5-2.0, 1024x1024 crops, flips, photometric distortion; batch 8; 160k
steps; `segformer_recipe` (AdamW 6e-5, head ×10, warm-up 1,500, poly 1.0). Evaluation on whole
1024x2048 images (the paper slides 1024x1024 windows: ``--config.inference.window='(1024, 1024)'``
makes evaluation during training, experiments/evaluate.py and experiments/predict.py slide them).

  python experiments/plan.py --config=configs/segformer_cityscapes.py --topology=v5e:4x8
"""

from segjax.recipes import MMSEG_PHOTOMETRIC, segformer_recipe


def get_config():
  config = segformer_recipe(
    "tfds:cityscapes",
    variant="b0",
    crop_size=1024,
    batch_size=8,
    num_train_steps=160_000,
    train_pp=f"random_scale(0.5, 2.0)|random_crop(1024)|flip_lr|{MMSEG_PHOTOMETRIC}",
    eval_pp="",
    reference="76.2 mIoU (SegFormer-B0)",
  )
  config.eval_batch_size = 8
  return config
