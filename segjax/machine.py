"""What this machine has, read without starting JAX: whether an accelerator is attached."""

from __future__ import annotations

import glob
import os

# TPU or GPU device files (/dev/accel0 on TPU v2-v4, /dev/vfio/0 on v5e/v5p/v6e, /dev/nvidia0) or
# the environment variables a TPU VM or a GPU job sets.
_DEVICE_FILES = ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*")
_ENVIRONMENT = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES", "CUDA_VISIBLE_DEVICES")


def accelerator_present() -> bool:
  """Whether this machine has an NVIDIA GPU or a TPU (or says so in its environment)."""
  return any(glob.glob(pattern) for pattern in _DEVICE_FILES) or any(
    key in os.environ for key in _ENVIRONMENT
  )
