"""Segmentation losses (pure functions), the training objective from the config, and a checker.

* `segjax.losses.functions`: the losses and ``@register_loss``;
* `segjax.losses.terms`: loss terms over the model's outputs (``config.loss``, ``config.losses``);
* `segjax.losses.check`: ``check_loss`` for a new loss;
* `segjax.losses.mask_classification`: Mask2Former's matching and loss (``mask2former_loss``).
"""

from segjax.losses.check import LossCheckError, check_loss
from segjax.losses.functions import (
  binary_cross_entropy,
  boundary_weighted_cross_entropy,
  cross_entropy,
  dice_loss,
  focal_loss,
  focal_tversky_loss,
  jaccard_loss,
  loss_kind,
  lovasz_softmax_loss,
  register_loss,
  safe_divide,
  soft_confusion,
  takes_batch,
  tversky_loss,
  weighted_l1,
  weighted_mse,
)
from segjax.losses import mask_classification  # registers mask2former_loss
from segjax.losses.mask_classification import linear_sum_assignment, mask2former_loss
from segjax.losses.terms import LossTerm, Objective, make_terms, parse_loss

__all__ = [
  "LossCheckError",
  "LossTerm",
  "Objective",
  "binary_cross_entropy",
  "boundary_weighted_cross_entropy",
  "check_loss",
  "cross_entropy",
  "dice_loss",
  "focal_loss",
  "focal_tversky_loss",
  "jaccard_loss",
  "loss_kind",
  "linear_sum_assignment",
  "lovasz_softmax_loss",
  "make_terms",
  "mask2former_loss",
  "mask_classification",
  "parse_loss",
  "register_loss",
  "safe_divide",
  "soft_confusion",
  "takes_batch",
  "tversky_loss",
  "weighted_l1",
  "weighted_mse",
]
