"""Datasets (tfds builders with a descriptor each) and the tf.data input pipeline."""
from segjax.data.descriptor import DatasetDescriptor

__all__ = ["DatasetDescriptor"]
