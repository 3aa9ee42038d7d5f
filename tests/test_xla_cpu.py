"""segjax's XLA:CPU setting: where it is applied, and that convolutions compile without YNNPACK."""

import importlib.metadata
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import segjax  # noqa: F401  (applies the setting before JAX starts)
from segjax import xla_cpu


def test_setting_is_appended_only_where_it_applies():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_cpu.prefer_eigen_convolutions(env, jaxlib_version="0.10.2")
  assert env["XLA_FLAGS"] == (
    "--xla_force_host_platform_device_count=4 "
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
  )
  # Once only; a user's own YNNPACK choice is kept as it is.
  assert not xla_cpu.prefer_eigen_convolutions(env, jaxlib_version="0.10.2")
  assert env["XLA_FLAGS"].count("ynn_fusion_type") == 1
  own = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
  assert not xla_cpu.prefer_eigen_convolutions(own, jaxlib_version="0.10.2")
  assert own == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}

  empty = {}
  assert xla_cpu.prefer_eigen_convolutions(empty, jaxlib_version="0.11.3.dev20261101")
  assert empty == {"XLA_FLAGS": xla_cpu.SETTING}
  for version in ("0.10.1", "0.12.0", "1.0.0", "nightly"):  # XLA might not know the flag: untouched
    env = {}
    assert not xla_cpu.prefer_eigen_convolutions(env, jaxlib_version=version), version
    assert env == {}
  opted_out = {"SEGJAX_XLA_CPU_DEFAULTS": "1"}
  assert not xla_cpu.prefer_eigen_convolutions(opted_out, jaxlib_version="0.10.2")
  assert "XLA_FLAGS" not in opted_out


def _padded(x):
  """``x`` in float64 with the one-pixel zero border of a 'SAME' 3x3 convolution."""
  return np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))


def _reference_conv(x, k):
  """'SAME' 3x3 convolution, NHWC x HWIO, by shifted products in float64."""
  padded = _padded(x)
  height, width = x.shape[1:3]
  out = np.zeros(x.shape[:3] + (k.shape[-1],))
  for i in range(3):
    for j in range(3):
      out += padded[:, i : i + height, j : j + width] @ k[i, j].astype(np.float64)
  return out


def test_cpu_convolutions_compile_to_xla_kernels_with_the_same_values():
  if jax.default_backend() != "cpu":
    pytest.skip("the setting concerns XLA:CPU")
  flags, version = os.environ.get("XLA_FLAGS", ""), importlib.metadata.version("jaxlib")
  if os.environ.get(xla_cpu.OPT_OUT, "") not in ("", "0"):
    pytest.skip(f"{xla_cpu.OPT_OUT}={os.environ[xla_cpu.OPT_OUT]} asks for XLA's own defaults")
  if xla_cpu.FLAG in flags and xla_cpu.SETTING not in flags:
    pytest.skip(f"XLA_FLAGS={flags!r} sets {xla_cpu.FLAG} itself")
  if not xla_cpu.KNOWN_JAXLIB[0] <= xla_cpu._release(version) < xla_cpu.KNOWN_JAXLIB[1]:
    pytest.skip(
      f"jaxlib {version} is outside {xla_cpu.KNOWN_JAXLIB}, where segjax leaves XLA_FLAGS alone"
    )
  assert xla_cpu.SETTING in flags, f"import segjax did not apply the setting: {flags!r}"
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 9, 7, 5)).astype(np.float32)
  k = rng.normal(size=(3, 3, 5, 4)).astype(np.float32)

  def conv(x, k):
    return jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  compiled = jax.jit(conv).lower(x, k).compile()
  assert "convolution(" in compiled.as_text()
  assert "__ynn_fusion" not in compiled.as_text()
  np.testing.assert_allclose(compiled(x, k), _reference_conv(x, k), rtol=1e-5, atol=1e-5)
  # Its weight gradient too (the pass YNNPACK was slowest at): d/dk sum(conv * g).
  g = rng.normal(size=(2, 9, 7, 4)).astype(np.float32)
  dk = jax.jit(jax.grad(lambda k: jnp.sum(conv(x, k) * g)))(k)
  padded = _padded(x)
  expected = np.stack(
    [
      np.stack([np.einsum("bhwc,bhwo->co", padded[:, i : i + 9, j : j + 7], g) for j in range(3)])
      for i in range(3)
    ]
  )
  np.testing.assert_allclose(dk, expected, rtol=1e-4, atol=1e-4)
