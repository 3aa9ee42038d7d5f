"""XLA:CPU convolutions: XLA's own (Eigen) kernels instead of YNNPACK's.

jaxlib 0.10 and 0.11 hand every CPU convolution to YNNPACK (``__ynn_fusion`` in the compiled
HLO). On the 2-core x86-64 machine of the README that ran a 3x3, 64->64 convolution on
8x128x128 at 43-59 GFLOP/s forward and 2-5 GFLOP/s for its weight gradient; with YNNPACK's
convolutions turned off, XLA's Eigen kernels ran 65-84, 65-88 and 51-63 GFLOP/s (forward, input
and weight gradient; PyTorch 2.14: 52-93, 58-87, 51-70), which took segjax's inference past
PyTorch's and its train steps to about PyTorch's speed (README, "Speed"). Only convolutions
change: YNNPACK keeps the dots and the element-wise fusions it takes by default.

``import segjax`` calls :func:`prefer_eigen_convolutions`, which appends the XLA flag to
``XLA_FLAGS``. XLA reads ``XLA_FLAGS`` once, when JAX starts its first backend, so the flag only
takes effect if that happens after ``import segjax`` (any script that imports segjax before its
first JAX computation). It leaves ``XLA_FLAGS`` alone when the user already chose a YNNPACK
setting there, when ``SEGJAX_XLA_CPU_DEFAULTS=1`` asks for XLA's defaults, and for jaxlib versions
outside those known to accept the flag (an unknown XLA flag aborts the process). GPU and TPU
compilers do not use XLA's CPU options.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import MutableMapping

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
SETTING = FLAG + "=-individual_convolution"
OPT_OUT = "SEGJAX_XLA_CPU_DEFAULTS"
# jaxlib releases whose XLA knows the flag and its "-<type>" form (0.10.2 measured here).
KNOWN_JAXLIB = ((0, 10, 2), (0, 12, 0))


def _release(version: str) -> tuple | None:
  match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
  return tuple(int(part) for part in match.groups()) if match else None


def prefer_eigen_convolutions(
  environ: MutableMapping[str, str] = os.environ, jaxlib_version: str | None = None
) -> bool:
  """Appends :data:`SETTING` to ``environ["XLA_FLAGS"]`` where it applies; True if it did."""
  flags = environ.get("XLA_FLAGS", "")
  if environ.get(OPT_OUT, "") not in ("", "0") or FLAG in flags:
    return False
  if jaxlib_version is None:
    try:
      jaxlib_version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
      return False
  release = _release(jaxlib_version)
  if release is None or not KNOWN_JAXLIB[0] <= release < KNOWN_JAXLIB[1]:
    return False
  environ["XLA_FLAGS"] = f"{flags} {SETTING}".strip()
  return True
