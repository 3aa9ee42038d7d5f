"""Evaluators by name (``config.evals``): what is measured on the predictions of a split.

An evaluator is a class registered as ``"evaluator"`` (`segjax.registry`), built with the
dataset's descriptor (and a spec's arguments: ``"my_project.evals:BoundaryF(tolerance=2)"``)
and holding:

- ``reads``: the prediction entries it needs (``"semantic"``, ``"panoptic"``, ``"instances"``,
  or any a post-processor adds); ``labels``: the batch entries (ground truth) it needs;
- ``zeros() -> pytree`` and ``batch_sums(predictions, batch) -> pytree`` (``jnp``, in the compiled
  step; ``batch["valid"]`` marks the padding examples): the sums of a batch, added exactly over
  the split, the devices and the hosts (`segjax.metrics.ExactSum`); an evaluator without device
  sums returns ``{}`` from both;
- optionally ``host = True`` with ``start()`` and ``collect(predictions, local)`` (numpy, each
  process's own examples; ``local["size"]`` is each image's size without padding) for metrics
  computed on the host (COCO mask AP); a host evaluator with ``model_inputs(*arrays) -> images``
  (``jnp``) prompts the model itself: ``start(predict)`` gets ``predict(*arrays) -> predictions``
  (numpy, this process's rows), the model under the same spec and chain on those inputs (every
  process must call it equally often);
- ``summarize(sums) -> dict``: the JSON-ready metrics (numbers at the top level are logged).

Registered here: ``semantic`` (`semantic.Semantic`: the confusion matrix, mIoU, ...),
``panoptic`` (PQ/SQ/RQ), ``mask_ap`` (COCO mask AP) and ``interactive`` (a click model in clicks:
NoC@85/90, the mean IoU after k clicks). `segjax.evaluation` runs them.
"""

from __future__ import annotations

from segjax import registry


def evaluator(name: str):
  """Decorator: registers an evaluator class under ``name``."""
  return registry.register("evaluator", name)


def make(spec, descriptor):
  """The evaluator of ``spec`` (a registered name with arguments, an importable class or a
  class) for ``descriptor``'s dataset."""
  return registry.lookup("evaluator", spec)(descriptor)


from segjax.evaluators import interactive  # noqa: E402,F401  (registers the evaluators)
from segjax.evaluators import mask_ap  # noqa: E402,F401
from segjax.evaluators import panoptic  # noqa: E402,F401
from segjax.evaluators import semantic  # noqa: E402,F401
