"""Post-processors: from a model's raw outputs to predictions, configured as a chain of named steps
and shared by evaluation, prediction and export::

  config.postprocess = "argmax"                                        # semantic models
  config.postprocess = ("argmax|panoptic_deeplab(center_threshold=0.1, nms_kernel=7, top_k=200)"
                        "|scored_instances")                           # Panoptic-DeepLab
  config.postprocess = "argmax|mask_panoptic|mask_instances"          # Mask2Former
  config.postprocess = "argmax|remove_small(30)|semantic_instances('watershed')|scored_instances"

Each step is a registered factory: called with the settings of its spec, it returns
``step(predictions, descriptor) -> dict``, which reads entries of ``predictions`` (the model's
outputs and what earlier steps added, every array with a leading batch dimension) and returns new
or replaced entries. The entries evaluation and export use:

* ``semantic`` ``[B,H,W]`` class ids → confusion matrix, mIoU; the masks of pre-labels;
* ``panoptic`` ``[B,H,W]`` ids ``class * label_divisor + instance`` → PQ, panoptic pictures;
* ``instances`` (a list per image of ``{"masks", "classes", "ids", "scores"}``) → mask AP, scored
  COCO pre-labels.

Steps registered with ``jit=True`` are pure ``jnp`` and run inside the compiled evaluation or
prediction step; the others (OpenCV, pycocotools) run on the host, after the compiled part, on
numpy arrays. Settings are arguments in the chain string, so tuning a threshold never rebuilds the
model: ``--config.postprocess="argmax|panoptic_deeplab(center_threshold=0.2)"``.

| step | jit | adds | from |
|---|---|---|---|
| ``argmax`` | yes | ``semantic`` | ``logits`` |
| ``panoptic_deeplab(center_threshold, nms_kernel, top_k, stuff_area)`` | yes | ``panoptic`` | ``semantic``, ``center``, ``offset`` |
| ``semantic_instances(method, min_area, min_distance)`` | no | ``instance``, ``panoptic`` | ``semantic`` |
| ``scored_instances`` | no | ``instances`` | ``panoptic`` (+ ``logits``, ``center``) |
| ``mask_panoptic(object_threshold, overlap_threshold)`` | yes | ``panoptic`` | ``class_logits``, ``mask_logits`` (Mask2Former) |
| ``mask_instances(top_k)`` | no | ``instances`` | ``class_logits``, ``mask_logits`` (Mask2Former) |
| ``opening``/``closing``/``erosion``/``dilation``, ``remove_small``, ``fill_holes`` | no | ``semantic`` | ``semantic`` |
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import numpy as np

from segjax import registry
from segjax.data.descriptor import DatasetDescriptor


def register_postprocessor(
  fn=None,
  *,
  name: str | None = None,
  jit: bool = False,
  reads: tuple[str, ...] = (),
  adds: tuple[str, ...] = ("semantic",),
):
  """Decorator registering a post-processing step: ``jit`` if it is pure ``jnp``; ``reads`` and
  ``adds`` name the entries it needs and makes (checked against the model's outputs)."""
  if fn is None:
    return lambda f: register_postprocessor(f, name=name, jit=jit, reads=reads, adds=adds)
  fn.postprocess_info = (bool(jit), tuple(reads), tuple(adds))
  return registry.register("postprocess", name)(fn)


@dataclasses.dataclass(frozen=True)
class Step:
  spec: str
  fn: Callable[..., dict]
  jit: bool
  reads: tuple[str, ...]
  adds: tuple[str, ...]


def _step(spec: str) -> Step:
  factory = registry.lookup("postprocess", spec)
  jit, reads, adds = getattr(getattr(factory, "func", factory), "postprocess_info", (False, (), ()))
  try:
    fn = factory()
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.postprocess step {spec!r}: {e}") from e
  return Step(spec, fn, jit, reads, adds)


class Chain:
  """A parsed ``config.postprocess`` chain. ``compiled`` is the longest prefix of jit steps (run
  inside the compiled step), ``host`` the rest (run on numpy arrays after it)."""

  def __init__(self, spec: str, descriptor: DatasetDescriptor):
    self.spec = spec
    self.descriptor = descriptor
    steps = [_step(part.strip()) for part in (spec or "").split("|") if part.strip()]
    split = next((i for i, s in enumerate(steps) if not s.jit), len(steps))
    self.compiled, self.host = steps[:split], steps[split:]

  @property
  def steps(self) -> list[Step]:
    return self.compiled + self.host

  def reads(self) -> set[str]:
    """The model outputs the chain needs (entries read before any step adds them)."""
    made, needed = set(), set()
    for step in self.steps:
      needed |= set(step.reads) - made
      made |= set(step.adds)
    return needed

  def check_outputs(self, outputs: Mapping[str, Any]) -> None:
    """Raises naming the step and the missing entry when the model lacks what the chain reads."""
    available = set(outputs)
    for step in self.steps:
      missing = [r for r in step.reads if r not in available]
      if missing:
        raise KeyError(
          f"config.postprocess step {step.spec!r} reads {missing}, which neither "
          f"the model nor an earlier step gives (available: {sorted(available)})."
        )
      available |= set(step.adds)

  def apply_compiled(self, predictions: dict) -> dict:
    """The jit steps (``jnp``; call inside ``jax.jit``)."""
    return _run(self.compiled, predictions, self.descriptor)

  def apply_host(self, predictions: dict) -> dict:
    """The host steps on numpy arrays (after `apply_compiled`)."""
    return _run(self.host, predictions, self.descriptor)

  def __call__(self, predictions: dict) -> dict:
    """Every step, eagerly (tests, single images)."""
    return self.apply_host(self.apply_compiled(dict(predictions)))


def _run(steps, predictions, descriptor):
  out = dict(predictions)
  for step in steps:
    out.update(step.fn(out, descriptor))
  return out


def validate(spec: str) -> None:
  """Parses ``config.postprocess`` (unknown names and bad arguments fail with the list)."""
  for part in (spec or "").split("|"):
    if part.strip():
      _step(part.strip())


def per_image(fn: Callable[..., Any], *arrays) -> list:
  """``fn`` on each image of numpy batch ``arrays`` (host steps)."""
  arrays = [np.asarray(jax.device_get(a)) if a is not None else None for a in arrays]
  return [fn(*(a[i] if a is not None else None for a in arrays)) for i in range(len(arrays[0]))]


from segjax.postprocess import steps  # noqa: E402  (registers the steps)

__all__ = ["Chain", "per_image", "register_postprocessor", "steps", "validate"]
