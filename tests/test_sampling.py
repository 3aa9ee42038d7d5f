"""Bilinear sampling (`segjax.models.sampling`) against PyTorch's ``grid_sample`` computed point by
point, and the deformable attention built on it."""

import jax
import jax.numpy as jnp
import numpy as np

from segjax.models import sampling


def grid_sample_loop(value, points):
  """PyTorch's grid_sample (bilinear, zeros, align_corners=False), one point at a time."""
  batch, height, width, channels = value.shape
  out = np.zeros((batch, points.shape[1], channels))
  for b in range(batch):
    for n, (x, y) in enumerate(points[b]):
      px, py = x * width - 0.5, y * height - 0.5
      x0, y0 = int(np.floor(px)), int(np.floor(py))
      for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
          if 0 <= yi < height and 0 <= xi < width:
            out[b, n] += (1 - abs(px - xi)) * (1 - abs(py - yi)) * value[b, yi, xi]
  return out


def test_bilinear_sample_equals_a_loop_inside_on_the_border_and_outside():
  rng = np.random.default_rng(0)
  value = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  points = rng.uniform(-0.2, 1.2, size=(2, 40, 2)).astype(np.float32)
  points[0, :4] = [[0, 0], [1, 1], [0.5 / 7, 0.5 / 5], [1.0, 0.3]]  # corners, a pixel centre
  got = np.asarray(sampling.bilinear_sample(jnp.asarray(value), jnp.asarray(points)))
  np.testing.assert_allclose(got, grid_sample_loop(value, points), atol=1e-5)
  np.testing.assert_allclose(got[0, 2], value[0, 0, 0], atol=1e-6)  # a centre: the pixel itself
  np.testing.assert_allclose(got[0, 0], value[0, 0, 0] / 4, atol=1e-6)  # a corner: a quarter
  grad = jax.grad(lambda v: sampling.bilinear_sample(v, jnp.asarray(points)).sum())(value)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_resize_bilinear_shrinks_without_antialiasing():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  # PyTorch's interpolate(scale 1/2, bilinear, align_corners=False) samples at the 2x2 centres
  got = sampling.resize_bilinear(x, (2, 2))[0, ..., 0]
  np.testing.assert_allclose(got, [[2.5, 4.5], [10.5, 12.5]])
