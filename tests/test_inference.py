"""Padded sliding window, strips to file, and test-time augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import inference

RNG = np.random.default_rng(0)
KERNEL_1x1 = jnp.asarray(RNG.normal(size=(1, 1, 3, 4)), jnp.float32)
KERNEL_3x3 = jnp.asarray(RNG.normal(size=(3, 3, 3, 4)) * 0.5, jnp.float32)


def conv(kernel):
  """A translation-equivariant 'model': one convolution (zero padding), logits [B,H,W,4]."""
  return lambda x: jax.lax.conv_general_dilated(
    jnp.asarray(x, jnp.float32), kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def whole(apply_fn, image, pad=0):
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
  logits = np.asarray(apply_fn(padded[None]))[0]
  logits = logits[pad : pad + image.shape[0], pad : pad + image.shape[1]]
  return np.asarray(jax.nn.softmax(logits, axis=-1))


@pytest.mark.parametrize("blend", ["gaussian", "uniform"])
@pytest.mark.parametrize("shape", [(50, 70), (13, 9)])  # larger and smaller than the window
def test_per_pixel_model_sliding_equals_whole_image_everywhere(blend, shape):
  image = RNG.normal(size=shape + (3,)).astype(np.float32)
  got = inference.sliding_window_predict(
    conv(KERNEL_1x1), image, window=(16, 24), overlap=0.5, blend=blend, batch_size=4
  )
  np.testing.assert_allclose(got, whole(conv(KERNEL_1x1), image), rtol=1e-5, atol=1e-6)


def test_no_seams_and_reflect_padded_borders():
  # A 3x3 model: pixels on a window's edge see that window's zero padding; Gaussian blending
  # gives them almost no weight, so the blended result matches a whole-image pass everywhere
  # (no seams at window edges), including the image border, where both pad by reflection.
  image = RNG.normal(size=(61, 83, 3)).astype(np.float32)
  got = inference.sliding_window_predict(conv(KERNEL_3x3), image, window=(32, 32), overlap=0.25)
  want = whole(conv(KERNEL_3x3), image, pad=4)
  assert np.abs(got - want).max() < 1e-2
  # ... whereas uniform blending of the same windows shows the seams.
  uniform = inference.sliding_window_predict(
    conv(KERNEL_3x3), image, window=(32, 32), overlap=0.25, blend="uniform"
  )
  assert np.abs(uniform - want).max() > 10 * np.abs(got - want).max()


def test_blend_weights():
  w = inference.blend_weights((9, 7))
  assert w.shape == (9, 7) and w[4, 3] == 1.0 and w.min() >= 1e-6
  np.testing.assert_allclose(w, w[::-1, ::-1])
  assert (inference.blend_weights((4, 4), "uniform") == 1).all()
  # Where windows overlap, the blended result is sum(w_i s_i) / sum(w_i): constant scores of 1
  # in every window give exactly 1 everywhere.
  ones = lambda x: jnp.zeros(x.shape[:3] + (2,))  # softmax of zeros = 0.5 per class
  got = inference.sliding_window_predict(ones, np.zeros((40, 40, 3)), window=(16, 16), overlap=0.6)
  np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-6)


def test_strips_to_file_equal_the_in_memory_result(tmp_path):
  image = RNG.normal(size=(75, 40, 3)).astype(np.float32)
  source = np.lib.format.open_memmap(str(tmp_path / "image.npy"), "w+", np.float32, image.shape)
  source[:] = image
  kwargs = dict(window=(16, 16), overlap=0.25, batch_size=2)
  labels = inference.sliding_window_to_file(
    conv(KERNEL_3x3),
    source,
    str(tmp_path / "labels.npy"),
    scores_path=str(tmp_path / "scores.npy"),
    **kwargs,
  )
  scores = inference.sliding_window_predict(conv(KERNEL_3x3), image, **kwargs)
  np.testing.assert_array_equal(labels, scores.argmax(-1))
  np.testing.assert_allclose(np.load(tmp_path / "scores.npy"), scores, atol=1e-3)
  rows = [
    (y0, y1) for y0, y1, _ in inference.sliding_window_rows(conv(KERNEL_3x3), image, **kwargs)
  ]
  assert rows[0][0] == 0 and rows[-1][1] == 75 and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
  assert len(rows) > 3  # written strip by strip


def test_tta_flip_of_a_flip_symmetric_input_is_unchanged_and_scales_average():
  half = RNG.normal(size=(20, 10, 3)).astype(np.float32)
  image = np.concatenate([half, half[:, ::-1]], axis=1)  # mirror-symmetric
  symmetric_kernel = (KERNEL_3x3 + KERNEL_3x3[:, ::-1]) / 2
  plain = inference.tta_predict(conv(symmetric_kernel), image)
  flipped = inference.tta_predict(conv(symmetric_kernel), image, flip=True)
  np.testing.assert_allclose(flipped, plain, rtol=1e-5, atol=1e-6)
  two = inference.tta_predict(conv(KERNEL_1x1), image, scales=(1.0, 1.0), flip=False, window=(8, 8))
  np.testing.assert_allclose(two, whole(conv(KERNEL_1x1), image), rtol=1e-5, atol=1e-6)
  multi = inference.tta_predict(conv(KERNEL_1x1), image, scales=(0.5, 1.0, 1.5))
  assert multi.shape == (20, 20, 4)
  np.testing.assert_allclose(multi.sum(-1), 1.0, rtol=1e-5)


def test_dihedral_tta_of_an_equivariant_model_is_its_softmax_and_of_a_positional_one_the_mean():
  images = RNG.normal(size=(2, 6, 6, 3)).astype(np.float32)
  per_pixel = lambda x: jnp.einsum("bhwc,ck->bhwk", x, jnp.asarray(KERNEL_1x1[0, 0]))
  want = np.log(np.asarray(jax.nn.softmax(per_pixel(images), -1)))
  for mode in ("flip", "d4"):  # any symmetry commutes with a per-pixel map: TTA changes nothing
    got = jax.jit(lambda x, m=mode: inference.dihedral_tta(per_pixel, x, m))(images)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  wide = RNG.normal(size=(2, 6, 8, 3)).astype(np.float32)  # odd turns make 8x6 images: 2 batches
  np.testing.assert_allclose(
    inference.dihedral_tta(per_pixel, wide, "d4"),
    np.log(np.asarray(jax.nn.softmax(per_pixel(wide), -1))),
    rtol=1e-5,
    atol=1e-5,
  )
  np.testing.assert_array_equal(inference.dihedral_tta(per_pixel, images, ""), per_pixel(images))
  # A model that sees the column: logit k = x-coordinate * (k - 1); flips average it away.
  ramp = lambda x: (
    jnp.arange(x.shape[2], dtype=jnp.float32)[None, None, :, None]
    * (jnp.arange(3.0) - 1)[None, None, None, :]
    + 0 * x[..., :1]
  )
  probs = lambda cols: (
    np.exp(cols[..., None] * (np.arange(3.0) - 1))
    / np.exp(cols[..., None] * (np.arange(3.0) - 1)).sum(-1, keepdims=True)
  )
  cols = np.broadcast_to(np.arange(6.0), (6, 6))
  flip = np.exp(np.asarray(inference.dihedral_tta(ramp, images, "flip")))[0]
  np.testing.assert_allclose(flip, (probs(cols) + probs(5 - cols)) / 2, rtol=1e-5)
  d4 = np.exp(np.asarray(inference.dihedral_tta(ramp, images, "d4")))[0]
  rows = cols.T
  np.testing.assert_allclose(
    d4, (probs(cols) + probs(5 - cols) + probs(rows) + probs(5 - rows)) / 4, rtol=1e-5
  )
  with pytest.raises(ValueError, match=r"config.eval_tta='d8'"):
    inference.dihedral_tta(per_pixel, images, "d8")


def test_bad_arguments():
  with pytest.raises(ValueError, match="pad_mode"):
    inference.sliding_window_predict(
      conv(KERNEL_1x1), np.zeros((8, 8, 3)), window=(4, 4), pad_mode="wrap"
    )
  with pytest.raises(ValueError, match="overlap"):
    inference.sliding_window_predict(
      conv(KERNEL_1x1), np.zeros((8, 8, 3)), window=(4, 4), overlap=1.0
    )
