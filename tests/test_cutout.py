"""Cut-outs (`segjax.cutout`, ``--format=cutout``): the guided filter against its definition
computed window by window, its edge refinement on a made-up step edge, and the RGBA files
`predict_files` writes against the model's own probabilities."""

import os

import cv2
import numpy as np
import pytest

from segjax import cutout, predict, predict_files, runs


def guided_filter_loop(guide, source, radius, eps):
  """He et al.'s guided filter by its definition: a ridge regression per window (clipped at the
  borders), then each pixel averages the (a, b) of the windows that contain it."""
  height, width = source.shape
  a = np.zeros((height, width, 3))
  b = np.zeros((height, width))
  window = lambda y, x: (
    slice(max(y - radius, 0), y + radius + 1),
    slice(max(x - radius, 0), x + radius + 1),
  )
  for y in range(height):
    for x in range(width):
      i = guide[window(y, x)].reshape(-1, 3)
      p = source[window(y, x)].reshape(-1)
      mean_i, mean_p = i.mean(0), p.mean()
      sigma = (i - mean_i).T @ (i - mean_i) / len(p)
      cov = (i - mean_i).T @ (p - mean_p) / len(p)
      a[y, x] = np.linalg.solve(sigma + eps * np.eye(3), cov)
      b[y, x] = mean_p - a[y, x] @ mean_i
  out = np.zeros((height, width))
  for y in range(height):
    for x in range(width):
      out[y, x] = a[window(y, x)].reshape(-1, 3).mean(0) @ guide[y, x] + b[window(y, x)].mean()
  return out


@pytest.mark.parametrize("radius,eps", [(1, 1e-2), (2, 1e-3)])
def test_guided_filter_equals_its_definition_window_by_window(radius, eps):
  rng = np.random.default_rng(radius)
  guide = rng.uniform(size=(7, 9, 3))
  source = rng.uniform(size=(7, 9))
  np.testing.assert_allclose(
    cutout.guided_filter(guide, source, radius, eps),
    guided_filter_loop(guide, source, radius, eps),
    atol=1e-9,
  )


def test_the_matte_puts_a_blurred_probabilitys_transition_on_the_images_edge():
  """A dark | bright image split at column 20 and a probability ramping from 0 to 1 over columns
  12–28 (a coarse model's edge, 1/16 per column): the refined matte jumps at the image's edge
  (its largest step, between columns 19 and 20, crossing 0.5 there) by several times the ramp's
  step; a feather softens the jump; refine="none" keeps the probability."""
  image = np.zeros((24, 40, 3), np.uint8)
  image[:, 20:] = (200, 180, 160)
  image = np.clip(image + np.random.default_rng(0).normal(0, 3, image.shape), 0, 255).astype(
    np.uint8
  )
  probability = np.tile(np.clip((np.arange(40) - 12) / 16, 0, 1), (24, 1))
  refined = cutout.alpha_matte(image, probability, radius=8, eps=1e-4).mean(0)
  steps = np.diff(refined)
  assert steps.argmax() == 19 and steps.max() > 5 / 16, steps.max()
  assert refined[19] < 0.5 < refined[20]
  feathered = np.diff(
    cutout.alpha_matte(image, probability, radius=8, eps=1e-4, feather=2.0).mean(0)
  )
  assert 1 / 16 < feathered.max() < steps.max() / 2
  np.testing.assert_array_equal(cutout.alpha_matte(image, probability, refine="none"), probability)
  with pytest.raises(ValueError, match="cutout_refine must be one of .* not 'bilateral'"):
    cutout.alpha_matte(image, probability, refine="bilateral")


def test_predict_writes_rgba_cutouts_with_the_models_probability_as_alpha(straight_run, tmp_path):
  from segjax.data.shapes import render_scene  # pylint: disable=import-outside-toplevel

  config, workdir, _ = straight_run
  image, _, _ = render_scene(np.random.default_rng(3), 40, 4)
  path = str(tmp_path / "photo.png")
  cv2.imwrite(path, image[..., ::-1])
  config = config.copy_and_resolve_references()
  predictor = predict.Predictor(runs.load(workdir), config)
  predictions, probs = predict.predict_file(predictor, path)
  labels = np.asarray(predictions["semantic"][0])
  names = predictor.descriptor.class_names
  present = [c for c in cutout.cutout_classes((), predictor.descriptor) if np.any(labels == c)]
  assert len(present) >= 2
  for refine in ("none", "guided"):
    config.predict.update(dict(cutout_refine=refine, cutout_radius=3))
    out = tmp_path / refine
    predict_files.predict_files(
      predict.Predictor(runs.load(workdir), config), [path], str(out), "cutout", progress=False
    )
    written = sorted(os.listdir(out / "cutouts"))
    assert written == sorted(f"photo_{names[c]}.png" for c in present)
    for c in present:
      rgba = cv2.imread(str(out / "cutouts" / f"photo_{names[c]}.png"), cv2.IMREAD_UNCHANGED)
      rgba = cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGBA)
      np.testing.assert_array_equal(rgba[..., :3], image)
      want = (
        probs[..., c] if refine == "none" else cutout.alpha_matte(image, probs[..., c], radius=3)
      )
      np.testing.assert_array_equal(rgba[..., 3], np.rint(want * 255).astype(np.uint8))
  config.predict.cutout_classes = ("square", "hexagon")
  with pytest.raises(ValueError, match="cutout_classes: 'hexagon' is neither a class name"):
    predict_files.predict_files(
      predict.Predictor(runs.load(workdir), config),
      [path],
      str(tmp_path / "bad"),
      "cutout",
      progress=False,
    )


def test_instances_get_one_cutout_each_limited_to_their_grown_region():
  image = np.full((20, 30, 3), 90, np.uint8)
  labels = np.zeros((20, 30), np.int32)
  labels[2:8, 2:8] = 1
  labels[10:18, 15:25] = 1
  instance = np.zeros((20, 30), np.uint16)
  instance[2:8, 2:8] = 1
  instance[10:18, 15:25] = 2
  probs = np.zeros((20, 30, 2))
  probs[..., 1] = labels * 0.9
  probs[..., 0] = 1 - probs[..., 1]
  pieces = cutout.cutouts(image, probs, labels, instance, [1], refine="none", radius=1)
  assert [(c, n) for c, n, _ in pieces] == [(1, 1), (1, 2)]
  first = pieces[0][2][..., 3]
  assert first[2:8, 2:8].min() == round(0.9 * 255) and first[10:18, 15:25].max() == 0
  assert (first > 0).sum() == 36  # its own pixels; the grown ring has probability 0 here
