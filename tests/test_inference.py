"""The inference spec (compiled window, scales, flips / D4), the streaming sliding window and
strips to file."""

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


def spec_probs(spec, logits_fn, images):
  """Class probabilities of ``images [B,H,W,C]`` under ``spec`` (compiled)."""
  outputs = jax.jit(lambda x: spec.outputs(lambda v, **kw: {"logits": logits_fn(v)}, x))(images)
  return np.asarray(jax.nn.softmax(outputs["logits"], axis=-1))


@pytest.mark.parametrize("pad_mode", ["reflect", "constant", "edge"])
@pytest.mark.parametrize("shape", [(50, 70), (13, 9)])
def test_the_compiled_window_equals_the_streaming_one(shape, pad_mode):
  # Spec's jnp window (batched images, 3 windows a pass, the last pass padded) gives the scores
  # of the numpy window that streams rasters, image by image.
  images = RNG.normal(size=(2, *shape, 3)).astype(np.float32)
  for blend in ("gaussian", "uniform"):
    spec = inference.Spec(
      window=(16, 24), overlap=0.3, blend=blend, pad_mode=pad_mode, window_batch=3
    )
    got = spec_probs(spec, conv(KERNEL_3x3), images)
    for i in range(2):
      want = inference.sliding_window_predict(
        conv(KERNEL_3x3), images[i], window=(16, 24), overlap=0.3, blend=blend, pad_mode=pad_mode
      )
      np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_scales_resize_with_half_pixel_centres_and_average():
  # A per-pixel model at scales 0.5 and 1.5: OpenCV's INTER_LINEAR of the image, the
  # probabilities resized back the same way, and the mean with scale 1, by hand.
  import cv2

  image = RNG.normal(size=(20, 30, 3)).astype(np.float32)
  per_pixel = lambda x: jnp.einsum("bhwc,ck->bhwk", x, jnp.asarray(KERNEL_1x1[0, 0]))
  softmax = lambda z: (
    np.exp(z - z.max(-1, keepdims=True))
    / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
  )
  want = 0
  for scale in (0.5, 1.0, 1.5):
    size = (int(round(30 * scale)), int(round(20 * scale)))
    x = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    p = softmax(np.asarray(per_pixel(x[None]))[0])
    want = want + cv2.resize(p, (30, 20), interpolation=cv2.INTER_LINEAR)
  got = spec_probs(inference.Spec(scales=(0.5, 1.0, 1.5)), per_pixel, image[None])[0]
  np.testing.assert_allclose(got, want / 3, rtol=1e-4, atol=1e-5)
  # flips of a mirror-symmetric image under a mirror-symmetric model change nothing; windows of
  # a per-pixel model equal the whole image.
  half = RNG.normal(size=(20, 10, 3)).astype(np.float32)
  mirrored = np.concatenate([half, half[:, ::-1]], axis=1)[None]
  symmetric = conv((KERNEL_3x3 + KERNEL_3x3[:, ::-1]) / 2)
  plain = spec_probs(inference.Spec(), symmetric, mirrored)
  np.testing.assert_allclose(
    spec_probs(inference.Spec(tta="flip"), symmetric, mirrored), plain, rtol=1e-5, atol=1e-6
  )
  windows = spec_probs(inference.Spec(window=(8, 8), scales=(1.0, 1.0)), per_pixel, mirrored)
  np.testing.assert_allclose(windows, spec_probs(inference.Spec(), per_pixel, mirrored), atol=1e-6)


def test_dihedral_tta_of_an_equivariant_model_is_its_softmax_and_of_a_positional_one_the_mean():
  images = RNG.normal(size=(2, 6, 6, 3)).astype(np.float32)
  per_pixel = lambda x: jnp.einsum("bhwc,ck->bhwk", x, jnp.asarray(KERNEL_1x1[0, 0]))
  want = np.asarray(jax.nn.softmax(per_pixel(images), -1))
  for mode in ("flip", "d4"):  # any symmetry commutes with a per-pixel map: TTA changes nothing
    got = spec_probs(inference.Spec(tta=mode), per_pixel, images)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  wide = RNG.normal(size=(2, 6, 8, 3)).astype(np.float32)  # odd turns make 8x6 images: 2 batches
  np.testing.assert_allclose(
    spec_probs(inference.Spec(tta="d4"), per_pixel, wide),
    np.asarray(jax.nn.softmax(per_pixel(wide), -1)),
    rtol=1e-5,
    atol=1e-5,
  )
  # Without averaging, the outputs pass unchanged: raw logits, every head.
  heads = inference.Spec().outputs(lambda x: {"logits": per_pixel(x), "other": x}, images)
  np.testing.assert_array_equal(heads["logits"], per_pixel(images))
  assert set(heads) == {"logits", "other"}
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
  flip = spec_probs(inference.Spec(tta="flip"), ramp, images)[0]
  np.testing.assert_allclose(flip, (probs(cols) + probs(5 - cols)) / 2, rtol=1e-5)
  d4 = spec_probs(inference.Spec(tta="d4"), ramp, images)[0]
  rows = cols.T
  np.testing.assert_allclose(
    d4, (probs(cols) + probs(5 - cols) + probs(rows) + probs(5 - rows)) / 4, rtol=1e-5
  )


def test_the_spec_names_a_bad_value_and_an_unknown_key():
  for kwargs, match in (
    (dict(tta="d8"), r"config.inference.tta='d8': use one of \['', 'd4', 'flip'\]"),
    (dict(window=(8,)), r"config.inference.window=\(8,\)"),
    (dict(overlap=1.0), r"config.inference.overlap=1.0"),
    (dict(scales=(0.0, 1.0)), r"config.inference.scales"),
    (dict(blend="box"), r"config.inference.blend='box'"),
  ):
    with pytest.raises(ValueError, match=match):
      inference.Spec(**kwargs)
  import ml_collections

  config = ml_collections.ConfigDict(dict(inference=dict(window=(8, 8), flip=True)))
  with pytest.raises(KeyError, match=r"config.inference.flip: unknown key"):
    inference.Spec.from_config(config)
  config = ml_collections.ConfigDict(dict(inference=dict(window=None, scales=(1.0,))))
  spec = inference.Spec.from_config(config, dict(window=(8, 8)))
  assert spec.window == (8, 8) and spec.averages and spec.model_kwargs() == {}
  assert inference.Spec(model_scales=(0.5, 1.0)).model_kwargs() == {"scales": (0.5, 1.0)}


def test_bad_arguments():
  with pytest.raises(ValueError, match="pad_mode"):
    inference.sliding_window_predict(
      conv(KERNEL_1x1), np.zeros((8, 8, 3)), window=(4, 4), pad_mode="wrap"
    )
  with pytest.raises(ValueError, match="overlap"):
    inference.sliding_window_predict(
      conv(KERNEL_1x1), np.zeros((8, 8, 3)), window=(4, 4), overlap=1.0
    )
