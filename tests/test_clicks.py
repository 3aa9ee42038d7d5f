"""The click protocol of interactive segmentation on hand-made masks whose click sequences are
known: where each next click goes, its sign, NoC and the IoU curve."""

import numpy as np
import pytest

from segjax.interactive import clicks as lib


def square(shape, top, left, size):
  mask = np.zeros(shape, bool)
  mask[top : top + size, left : left + size] = True
  return mask


def test_the_first_click_is_the_objects_innermost_pixel():
  truth = square((30, 30), 5, 5, 10)  # rows/columns 5..14: the innermost pixels are 9..10
  assert lib.next_click(truth, np.zeros_like(truth)) == lib.Click(9, 9, True)
  # An object on the image border: the border counts as boundary.
  edge = square((30, 30), 0, 0, 6)
  assert lib.next_click(edge, np.zeros_like(edge)) == lib.Click(2, 2, True)
  # Nothing wrong, nothing to click; a clicked pixel is not clicked again.
  assert lib.next_click(truth, truth) is None
  single = square((5, 5), 2, 2, 1)
  assert lib.next_click(single, np.zeros_like(single), clicked=[lib.Click(2, 2, True)]) is None


def test_the_largest_error_region_decides_the_sign_and_the_place():
  truth = square((40, 40), 0, 0, 1) & False
  truth[10, 2:32] = True  # a missed line of 30 pixels
  prediction = square((40, 40), 25, 25, 5)  # a false 5x5 blob (25 pixels)
  largest = lib.next_click(truth, prediction)
  assert largest.positive and largest.y == 10 and 2 <= largest.x < 32
  # RITM's rule (the farthest point over all errors) picks the blob's centre instead.
  assert lib.next_click(truth, prediction, mode="farthest") == lib.Click(27, 27, False)
  # Ignored pixels are never errors.
  ignore = np.zeros_like(truth)
  ignore[10] = True
  assert lib.next_click(truth, prediction, ignore=ignore) == lib.Click(27, 27, False)
  with pytest.raises(ValueError, match=r"mode='nearest'"):
    lib.next_click(truth, prediction, mode="nearest")
  with pytest.raises(ValueError, match=r"give two \[H, W\] masks"):
    lib.next_click(truth, prediction[:-1])


def test_disk_painting_click_sequence_and_noc_by_hand():
  # Two 7x7 squares of truth; a disk painter of radius 3 (the 29 pixels with dy² + dx² <= 9).
  # Click 1 paints the first square's disk (IoU 29/98), click 2 the second one's (58/98); then
  # the corners the disks leave: click 3 at the first corner pixel paints a disk that spills out
  # of the square (the IoU drops), so click 4 is negative, just above it.
  truth = square((40, 40), 5, 5, 7) | square((40, 40), 20, 25, 7)
  predict = lib.disk_predictor(truth.shape, radius=3)
  made, ious = lib.click_sequence(predict, truth, max_clicks=20)
  assert made[:4] == [
    lib.Click(8, 8, True),
    lib.Click(23, 28, True),
    lib.Click(5, 5, True),
    lib.Click(3, 5, False),
  ]
  disk = np.count_nonzero(predict([lib.Click(8, 8, True)]))
  assert disk == 29
  np.testing.assert_allclose(ious[:2], [29 / 98, 58 / 98])
  assert len(ious) == 20 and ious[2] < ious[1] and max(ious) < 0.85  # painting never gets there
  # NoC by hand.
  assert lib.number_of_clicks([0.5, 0.86, 0.95], 0.85) == 2
  assert lib.number_of_clicks([0.5, 0.86, 0.95], 0.90) == 3
  assert lib.number_of_clicks([0.5] * 20, 0.90) == 20
  summary = lib.summarize_clicks([[0.5, 0.86, 0.95] + [0.95] * 17, [0.5] * 20])
  assert (summary["noc85"], summary["noc90"], summary["failures90"]) == (11.0, 11.5, 1)
  np.testing.assert_allclose(summary["miou_at_k"][:3], [0.5, 0.68, 0.725])
  # A perfect first click ends the sequence: the IoU held for the rest.
  one = square((20, 20), 5, 5, 1)
  made, ious = lib.click_sequence(lib.disk_predictor(one.shape, 0), one, max_clicks=5)
  assert made == [lib.Click(5, 5, True)] and ious == [1.0] * 5


def test_clicks_correct_a_pre_label():
  # A pre-label shifted right by 2 columns: a missed 8x2 strip on the left and a false one on the
  # right, equally large; the missed one is found first, so the first click is positive, in the
  # left strip, and raises the IoU above the pre-label's 48/80.
  truth = square((20, 20), 6, 4, 8)
  pre = square((20, 20), 6, 6, 8)
  assert lib.iou(truth, pre) == pytest.approx(48 / 80)
  predict = lib.disk_predictor(truth.shape, radius=1, initial=pre)
  made, ious = lib.click_sequence(predict, truth, max_clicks=3, initial=pre)
  assert made[0].positive and made[0].x in (4, 5) and ious[0] > 48 / 80


@pytest.mark.slow
def test_evaluate_interactive_script_on_a_hand_made_frame(tmp_path):
  # Two 7x7 nuclei in the frame's right half: one click at each centre paints 29 of their 49
  # pixels (IoU 29/49); painting never reaches 90 % in 20 clicks here (the corners spill).
  import json
  import os
  import subprocess
  import sys

  import cv2

  from conftest import ROOT

  image = np.full((40, 80), 100, np.uint16)
  instances = np.zeros((40, 80), np.uint16)
  for i, (top, left) in enumerate([(5, 45), (20, 60)], start=1):
    instances[top : top + 7, left : left + 7] = 10 * i
    image[top : top + 7, left : left + 7] = 4000
  cv2.imwrite(str(tmp_path / "img2d.tif"), image)
  cv2.imwrite(str(tmp_path / "mask2d.tif"), instances)
  out = tmp_path / "out"
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "experiments", "evaluate_interactive.py"),
      f"--source={tmp_path}",
      f"--workdir={out}",
    ],
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "PYTHONPATH": ROOT},
  )
  assert result.returncode == 0, result.stderr[-2000:]
  disk = json.load(open(out / "clicks.json"))["disk"]
  assert disk["objects"] == 2 and disk["miou_at_k"][0] == pytest.approx(29 / 49)
  assert disk["failures90"] == 2 and disk["noc90"] == 20
  assert (out / "clicks.png").exists() and "| disk | 2 |" in (out / "clicks.md").read_text()


def test_best_overlap_is_the_instance_of_largest_iou():
  instances = np.zeros((6, 6), np.int32)
  instances[0:3, 0:3] = 4  # 4 of its 9 pixels on the object: IoU 4 / 21
  instances[1:5, 1:5][instances[1:5, 1:5] == 0] = 7  # the object's other 12 pixels: IoU 12 / 16
  truth = np.zeros((6, 6), bool)
  truth[1:5, 1:5] = True
  np.testing.assert_array_equal(lib.best_overlap(instances, truth), instances == 7)
  assert not lib.best_overlap(np.zeros_like(instances), truth).any()
