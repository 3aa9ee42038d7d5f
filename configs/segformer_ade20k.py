"""SegFormer-B0 on ADE20K (tfds ``scene_parse150``, 150 classes): MMSegmentation's recipe
``segformer_mit-b0_8xb2-160k_ade20k-512x512`` (Xie et al. 2021).

Reference: 37.4 mIoU on val, single-scale (the paper's Table 1; MMSegmentation 37.41).

Recipe: images resized to fit 2048x512, scaled by 0.5-2.0, 512x512 crops, flips, photometric
distortion; batch 16; 160k steps; `segformer_recipe` (AdamW 6e-5, head ×10, warm-up 1,500, poly
1.0). Evaluation resizes the long side to 512 and pads to 512x512. Start the encoder from
ImageNet weights: ``segjax.models.from_transformers("segformer", <nvidia/mit-b0 directory>)``.

  python experiments/plan.py --config=configs/segformer_ade20k.py --topology=v5e:4x8
"""

from segjax.recipes import MMSEG_PHOTOMETRIC, segformer_recipe


def get_config():
  config = segformer_recipe(
    "tfds:scene_parse150",
    variant="b0",
    crop_size=512,
    batch_size=16,
    num_train_steps=160_000,
    train_pp=(
      "resize_keep_ratio(512, 2048)|random_scale(0.5, 2.0)|random_crop(512)|flip_lr|"
      + MMSEG_PHOTOMETRIC
    ),
    eval_pp="resize_keep_ratio(long=512)|pad_to(512)",
    reference="37.4 mIoU (SegFormer-B0)",
  )
  config.eval_batch_size = 16
  return config
