"""segjax: image segmentation in JAX/Flax (semantic, instance, panoptic)."""

__version__ = "0.1.0"
