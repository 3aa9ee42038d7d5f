"""Mask2Former, ResNet-50, on ADE20K semantic segmentation (tfds ``scene_parse150``, 150 classes):
the paper's recipe ``maskformer2_R50_bs16_160k`` (Cheng et al. 2022, detectron2 configs).

Reference: 47.2 mIoU on val, single-scale (49.2 multi-scale), the paper's Table 3 / model zoo.

Recipe: images resized so the short side is 512, scaled by 0.5-2.0 (the paper's shortest edge
256-1024), 512x512 crops, flips, photometric distortion; batch 16; 160k steps; the loss on the
segments of the semantic map (one per class present); `mask2former_recipe` for the model and
optimizer. Evaluation resizes the long side to 512 and pads to 512x512. Start the backbone from
torchvision's ImageNet ResNet-50 (``--config.model.pretrained=resnet50.safetensors``).

  python experiments/plan.py --config=configs/mask2former_ade20k.py --topology=v5e:4x8
"""

from segjax.recipes import MMSEG_PHOTOMETRIC, mask2former_recipe


def get_config(loss: str = "points"):
  config = mask2former_recipe(
    "tfds:scene_parse150",
    loss=loss,
    crop_size=512,
    batch_size=16,
    num_train_steps=160_000,
    train_pp=(
      "resize_keep_ratio(short=512)|random_scale(0.5, 2.0)|random_crop(512)|flip_lr|"
      + MMSEG_PHOTOMETRIC
    ),
    eval_pp="resize_keep_ratio(long=512)|pad_to(512)",
    target="semantic",
    reference="47.2 mIoU (Mask2Former)",
  )
  config.eval_batch_size = 16
  return config
