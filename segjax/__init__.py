"""segjax: image segmentation in JAX/Flax (semantic, instance, panoptic)."""
from segjax import xla_cpu as _xla_cpu

__version__ = "0.1.0"

# Before JAX starts a backend: CPU convolutions on XLA's Eigen kernels (see segjax/xla_cpu.py).
_xla_cpu.prefer_eigen_convolutions()
