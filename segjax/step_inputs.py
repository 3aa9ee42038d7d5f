"""What the train step makes of a batch before its forward pass: ``config.step_inputs``.

Most runs train on the batch as the input pipeline gives it (``config.step_inputs = ""``). Inputs
that depend on the model being trained are made here, inside the compiled step: a registered
function (kind ``"step_inputs"``, or an importable ``"package.module:function(...)"``)

  ``fn(forward, batch, rng, *, ignore_label) -> batch``

where ``forward(image) -> outputs`` is the model at the step's parameters in inference mode and
without gradient. Registered: ``iterative_clicks`` (`segjax.interactive.training`: RITM's click
simulation, for click models). The loss terms and training metrics read the batch it returns.
"""

from __future__ import annotations

import functools

import jax

from segjax import registry


def make(spec, ignore_label: int):
  """``(forward, batch, rng) -> batch`` of ``spec`` (``config.step_inputs``); None for none."""
  if not spec:
    return None
  try:
    fn = registry.lookup("step_inputs", spec)
  except (KeyError, ValueError) as e:
    raise ValueError(f"config.step_inputs={spec!r}: {e.args[0] if e.args else e}") from e
  return functools.partial(fn, ignore_label=ignore_label)


def forward_without_gradient(model, variables):
  """``forward(image) -> outputs`` of ``model`` in inference mode, no gradient to ``variables``."""
  variables = jax.lax.stop_gradient(variables)
  return lambda image: model.apply(variables, image, train=False)


from segjax.interactive import training as _training  # noqa: E402,F401  (registers its inputs)
