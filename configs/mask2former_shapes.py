r"""Mask2Former (Cheng et al. 2022) on the built-in ``shapes`` dataset's panoptic labels: one model
for semantic (mIoU), panoptic (PQ) and instance (mask AP) results, at the budget of
configs/panoptic_deeplab_shapes.py (2,300 steps of batch 8).

  python experiments/train.py --config=configs/mask2former_shapes.py \
      --workdir=/tmp/segjax/mask2former_shapes

A small ResNet-18 trunk (width 16, one block per stage), the deformable-attention pixel decoder
(64 channels, 2 layers) and the masked-attention decoder (6 layers = 2 rounds over the three
levels, 64 channels, 4 heads) with 16 queries (a scene has at most 10 segments: 2 stuff classes and
8 things); the paper's loss weights (class 2, mask 5, Dice 5, no-object 0.1, deep supervision) on
every pixel of the 16x16 masks (``num_points=0``) instead of sampled points; AdamW with
weight decay 0.05 at 1e-3 instead of the paper's 1e-4 (from scratch, no pretrained backbone) and
gradient clipping at 1.0 instead of 0.01. Inference: the paper's panoptic thresholds (0.8, 0.8)
and top-100 instances.

Measured (2-core CPU, 2026-12-01, commit 9099da8, 2,300 steps at 8.5-9.3 steps/s, nothing else
running): validation PQ 0.261 (things 0.000, stuff 0.652), mIoU 0.390, mask AP 0.088; with
``mask_panoptic(object_threshold=0.3)`` PQ 0.351 (things 0.142). With the paper's 1,024 sampled
points instead (``num_points=1024``): PQ 0.235 (things 0.000, stuff 0.587), mIoU 0.378, mask AP
0.088, at 1.8 steps/s on the same CPU. Panoptic-DeepLab reaches PQ 0.658 on this budget
(configs/panoptic_deeplab_shapes.py); the loss was still falling.
"""

from segjax.config_defaults import shapes_config


def get_config():
  config = shapes_config()
  config.model = dict(
    name="mask2former",
    backbone="resnet18",
    width=16,
    blocks=(1, 1, 1, 1),
    feature_size=64,
    mask_feature_size=64,
    hidden_dim=64,
    num_queries=16,
    num_heads=4,
    encoder_layers=2,
    encoder_ffn=128,
    decoder_layers=6,
    decoder_ffn=256,
    dtype="float32",
    pretrained="",
  )
  config.loss = ""
  config.losses = (
    ("class_logits", "panoptic", "mask2former_loss(max_targets=16, num_points=0)", 1.0),
  )
  config.train_metrics = ("mask_confusion",)
  config.optimizer.update(dict(learning_rate=1e-3, weight_decay=0.05))
  config.postprocess = "argmax|mask_panoptic|mask_instances"
  config.num_train_steps = 2300
  return config
