"""Hierarchical multi-scale attention around DeepLabV3+ (ResNet-101, output stride 8) on
Cityscapes, with NVIDIA's recipe (NVIDIA/semantic-segmentation, scripts/train_cityscapes.yml):
trained on scales 0.5 and 1.0 with a 0.05-weighted auxiliary loss on each scale's logits,
inferred on 0.5, 1.0 and 2.0.

Reference: 86.2 mIoU on Cityscapes val for HMSA with an HRNet-OCR trunk, Mapillary pretraining,
RMI loss and auto-labelled coarse data (85.1 on test; Tao, Sapra, Catanzaro 2020). segjax trains
DeepLabV3+ as the trunk with cross-entropy, so that number is an upper reference, not a target.

Recipe: 1024x2048 crops after scaling by 0.5-2.0, flips; batch 8 (1 per GPU); 175 epochs of
the 2,975 training images = 65k steps of SGD (lr 5e-3, momentum 0.9, weight decay 5e-4, poly
power 2); evaluation on whole 1024x2048 images at scales 0.5/1.0/2.0.

  python experiments/plan.py --config=configs/hmsa_cityscapes.py --topology=v5e:4x8
"""

from segjax.recipes import recipe_config


def get_config():
  config = recipe_config(
    "tfds:cityscapes",
    crop_size=(1024, 2048),
    batch_size=8,
    num_train_steps=65_000,
    train_pp="random_scale(0.5, 2.0)|random_crop((1024, 2048))|flip_lr",
  )
  config.model.update(
    dict(
      name="hmsa",
      trunk="deeplabv3plus",
      trunk_kwargs=dict(backbone="resnet101", output_stride=8),
      train_scales=(0.5, 1.0),
      eval_scales=(0.5, 1.0, 2.0),
      attention_features=256,
    )
  )
  config.losses = (("scale_logits/*", "semantic", "cross_entropy", 0.05),)
  config.optimizer.update(dict(learning_rate=5e-3, power=2.0))
  config.model.pretrained = ""  # a torchvision ResNet-101 file: --config.model.pretrained=...
  config.reference = "86.2 mIoU, HRNet-OCR trunk (paper)"
  return config
