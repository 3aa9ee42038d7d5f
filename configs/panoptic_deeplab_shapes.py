"""Panoptic-DeepLab (semantic + instance-centre + offset heads) on a UNet trunk, on the built-in
``shapes`` dataset's panoptic labels.

  python experiments/train.py --config=configs/panoptic_deeplab_shapes.py \\
      --workdir=/tmp/segjax/panoptic_shapes

The paper's instance losses and weights (centre MSE ×200, offset L1 ×0.01) with the quickstart's
semantic loss (CE + Dice): the paper's bootstrapped CE on the hardest 20% of pixels with small
instances ×3 (``--config.panoptic.semantic_top_k=0.2``) reached only PQ 0.179 / mIoU 0.239 in the
same 3,000 steps here. Centre Gaussians of sigma 4 px (the paper's 8 px is for 1024×2048 street
scenes; these shapes have radii of 6–18 px). Evaluation reports PQ/SQ/RQ (all, things, stuff) and
mIoU. Measured (2-core CPU, 3,000 steps at ~4.2 steps/s, 12.5 min): validation PQ 0.417 (things
0.208, stuff 0.730), mIoU 0.442 — below the 0.5 PQ target; the shared UNet decoder trades semantic
quality (0.766 mIoU alone) for the centre loss.
"""
from segjax.config_defaults import shapes_config


def get_config():
  config = shapes_config()
  config.model = dict(name="panoptic_deeplab", trunk="unet",
                      trunk_kwargs=dict(features=8, depth=4), head_features=16,
                      center_threshold=0.1, nms_kernel=5, top_k=16, stuff_area=16,
                      dtype="float32")
  config.loss = "cross_entropy + dice_loss"  # the semantic term
  config.panoptic = dict(semantic_top_k=0.0, center_loss_weight=200.0, offset_loss_weight=0.01)
  config.data.panoptic_targets = dict(sigma=4.0, small_instance_area=256,
                                      small_instance_weight=3.0)
  config.num_train_steps = 3000
  return config
