"""Post-processing steps on hand-drawn masks."""

import cv2
import numpy as np
import pytest

from segjax import postprocess
from segjax.data.shapes import DESCRIPTOR
from segjax.postprocess import morphology


def disc(shape, centre, radius):
  mask = np.zeros(shape, np.uint8)
  cv2.circle(mask, centre, radius, 1, -1)
  return mask.astype(bool)


def test_opening_removes_a_thin_spur_and_gives_it_to_the_surrounding_class():
  labels = np.zeros((20, 20), np.uint8)
  labels[5:15, 5:15] = 1  # a square of class 1 ...
  labels[9:10, 15:19] = 1  # ... with a 1-pixel-thin spur
  out = morphology.morphology(labels, "opening", classes=[1], kernel_shape="rect", size=3)
  assert (out[9, 15:19] == 0).all()  # spur gone, background took it
  assert (out[5:15, 5:15] == 1).all()  # the square survives an opening unchanged


def test_closing_erosion_dilation():
  labels = np.zeros((9, 9), np.uint8)
  labels[2:7, 2:7] = 1
  labels[4, 4] = 0  # a one-pixel gap
  assert morphology.morphology(labels, "closing", classes=[1], kernel_shape="rect")[4, 4] == 1
  eroded = morphology.morphology(labels, "erosion", classes=[1], kernel_shape="rect")
  assert eroded.sum() == 0  # a 5x5 square with a hole in the middle erodes away entirely
  dilated = morphology.morphology(labels, "dilation", classes=[1], kernel_shape="cross")
  assert dilated[1, 4] == 1 and dilated[1, 1] == 0  # a cross grows up/down/left/right only


def test_remove_small_components_and_fill():
  labels = np.full((10, 10), 2, np.uint8)
  labels[1, 1] = 1  # 1-pixel speck of class 1 inside class 2
  labels[5:9, 5:9] = 1  # 16-pixel region of class 1: kept
  out = morphology.remove_small(labels, min_area=5, classes=[1])
  assert out[1, 1] == 2 and (out[5:9, 5:9] == 1).all()
  assert morphology.remove_small(labels, 5, classes=[1], fill=0)[1, 1] == 0


def test_fill_holes_only_enclosed_and_small_enough():
  labels = np.zeros((12, 12), np.uint8)
  labels[2:10, 2:10] = 1
  labels[4:6, 4:6] = 0  # 4-pixel hole: enclosed
  labels[7:9, 6:9] = 3  # enclosed by class 1 too, but 6 pixels
  out = morphology.fill_holes(labels, classes=[1], max_area=4)
  assert (out[4:6, 4:6] == 1).all() and (out[7:9, 6:9] == 3).all()
  assert (morphology.fill_holes(labels, classes=[1])[7:9, 6:9] == 1).all()
  assert (out[0] == 0).all()  # the outside (touching the border) is no hole


def test_watershed_splits_two_touching_discs_where_components_cannot():
  mask = disc((60, 80), (25, 30), 15) | disc((60, 80), (52, 30), 15)  # overlapping by 3 px
  assert morphology.connected_instances(mask).max() == 1
  inst = morphology.watershed_instances(mask)
  assert inst.max() == 2
  assert inst[30, 25] != inst[30, 52] and inst[30, 25] > 0 and inst[30, 52] > 0
  assert ((inst > 0) == mask).all()  # every mask pixel belongs to an instance
  far = disc((60, 80), (15, 15), 8) | disc((60, 80), (60, 40), 8)
  assert morphology.connected_instances(far).max() == 2


def test_chain_steps_from_config_and_bad_steps():
  labels = np.zeros((1, 10, 10), np.int32)
  labels[0, 1, 1] = 1
  chain = postprocess.Chain("remove_small(3)|dilation(classes=(1,), size=3)", DESCRIPTOR)
  assert chain({"semantic": labels})["semantic"].sum() == 0
  assert not chain.compiled and len(chain.host) == 2
  with pytest.raises(KeyError, match="Unknown post-processor 'blur'.*remove_small"):
    postprocess.Chain("argmax|blur", DESCRIPTOR)
  with pytest.raises(ValueError, match="step .opening\\(kernel=.disc.\\).: kernel must be one of"):
    postprocess.Chain("argmax|opening(kernel='disc')", DESCRIPTOR)
  with pytest.raises(ValueError, match="method must be one of"):
    postprocess.validate("semantic_instances('voronoi')")


def test_chain_splits_compiled_and_host_steps_and_checks_model_outputs():
  chain = postprocess.Chain(
    "argmax|panoptic_deeplab(top_k=8)|remove_small(2)|scored_instances", DESCRIPTOR
  )
  assert [s.spec for s in chain.compiled] == ["argmax", "panoptic_deeplab(top_k=8)"]
  assert chain.reads() == {"logits", "center", "offset"}
  with pytest.raises(
    KeyError, match="'panoptic_deeplab\\(top_k=8\\)' reads \\['center', 'offset'\\]"
  ):
    chain.check_outputs({"logits": None, "features": None})


def test_semantic_instances_give_panoptic_ids_and_scores():
  labels = np.zeros((1, 12, 12), np.int32)  # stripes everywhere ...
  labels[0, 1:4, 1:4] = 2  # ... a disc,
  labels[0, 6:10, 6:10] = 3  # a triangle,
  labels[0, 0, 11] = 4  # and a 1-pixel square (below min_area: void)
  logits = np.log(np.full((1, 12, 12, 5), 0.1, np.float32))
  logits[0, 1:4, 1:4, 2] = np.log(0.6)
  chain = postprocess.Chain("semantic_instances(min_area=2)|scored_instances", DESCRIPTOR)
  out = chain({"semantic": labels, "logits": logits})
  panoptic = out["panoptic"][0]
  assert set(np.unique(panoptic)) == {0, 2001, 3002, 255000}
  assert panoptic[0, 11] == 255000 and out["instance"][0, 0, 11] == 0
  found = out["instances"][0]
  np.testing.assert_array_equal(found["classes"], [2, 3])
  # No centre head: the score is the mean class probability over the mask.
  np.testing.assert_allclose(found["scores"], [0.6, 0.2], rtol=1e-5)  # softmax of the logits
