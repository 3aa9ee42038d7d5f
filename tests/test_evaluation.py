"""segjax.evaluation on its own: the host-side evaluation of a Predictor (image by image) against
the compiled, batched Evaluator of the same run."""

import numpy as np
import pytest

from segjax import evaluation, predict, runs
from segjax.data import pipeline


@pytest.mark.slow
def test_evaluate_predictor_equals_the_compiled_evaluation_and_applies_tta(straight_run):
  config, workdir, final = straight_run
  run = runs.load(workdir)
  source = pipeline.get_source(config.data)
  plain = evaluation.evaluate_predictor(
    predict.Predictor(run, config), source, "validation", batch_size=3
  )
  # Image by image on the host = the compiled, batched, padded evaluation of the trainer.
  np.testing.assert_allclose(plain["mean_iou"], final["validation"]["mean_iou"], atol=1e-6)
  np.testing.assert_allclose(
    plain["pixel_accuracy"], final["validation"]["pixel_accuracy"], atol=1e-6
  )
  # The predictor's own settings are what is evaluated: scales and flips change the result.
  tta = config.copy_and_resolve_references()
  tta.predict.update(dict(scales=(0.75, 1.0), flip=True))
  got = evaluation.evaluate_predictor(predict.Predictor(run, tta), source, "validation")
  assert 0 < got["mean_iou"] <= 1 and got["mean_iou"] != plain["mean_iou"]
