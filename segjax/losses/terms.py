"""The training objective from the config: loss terms over the model's outputs.

Each term names the model output it reads, the batch entry it compares with, its loss and weight
(as deeplab2 configures a loss per output), and optionally a batch entry of per-pixel weights::

  config.loss = "cross_entropy + dice_loss"          # short form: terms on ("logits", "semantic")
  config.losses = (                                  # further terms
      ("aux_logits", "semantic", "cross_entropy", 0.4),            # DeepLab's auxiliary head
      ("scale_logits/*", "semantic", "cross_entropy", 0.05),       # HMSA: every scale's logits
      ("center", "center", "weighted_mse", 200.0, "center_weight"),  # Panoptic-DeepLab
      ("offset", "offset", "weighted_l1", 0.01, "offset_weight"),
  )

The loss of a term is a registered name with arguments (``"cross_entropy(label_smoothing=0.1)"``),
a sum of them (``"cross_entropy + 0.5 * dice_loss"``: the term's weight multiplies each), an
importable ``"module:function"``, or a function object. Nested outputs are addressed by paths
(``"scale_logits/0.5"``), and ``*`` stands for every entry at that level. The objective is
``Σ weight × loss`` over the terms; it also returns each term's value for the logs, named by the
loss for the short form (``cross_entropy``) and ``output/loss`` otherwise (``aux_logits/
cross_entropy``, ``scale_logits/0.5/cross_entropy``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from segjax import registry
from segjax.losses import functions


@dataclasses.dataclass(frozen=True)
class LossTerm:
  """One term: ``weight × loss(outputs[output], batch[target])``."""

  output: str
  target: str | None
  loss: Callable[..., Any]
  weight: float
  weight_key: str | None = None
  label: str = ""


def parse_loss(spec) -> list[tuple[Any, float]]:
  """Splits a loss expression into ``[(spec_or_function, weight), ...]``.

  Accepts ``"cross_entropy + 0.5 * dice_loss(smooth=1.0)"``, a single spec or function, or a
  sequence of ``(spec_or_function, weight[, kwargs])``.
  """
  if callable(spec):
    return [(spec, 1.0)]
  if isinstance(spec, str):
    if not spec.strip():
      return []
    if registry.is_importable(spec):
      return [(spec.strip(), 1.0)]
    # "package.module:function" is no Python expression: parse with a stand-in for each.
    imported = {}

    def stand_in(match):
      imported[f"_segjax_imported_{len(imported)}"] = match.group(0)
      return f"_segjax_imported_{len(imported) - 1}"

    text = _IMPORTED.sub(stand_in, spec.strip())
    try:
      tree = ast.parse(text, mode="eval").body
    except SyntaxError as e:
      raise ValueError(
        f"Cannot parse loss {spec!r}: expected e.g. 'cross_entropy + 0.5 * dice_loss(smooth=1.0)'."
      ) from e
    terms = []
    for node in _split_sum(tree):
      term, weight = _parse_product(node, spec)
      for name, original in imported.items():
        term = term.replace(name, original)
      terms.append((term, weight))
    return terms
  terms = []
  for item in spec:
    item = tuple(item)
    if len(item) not in (2, 3) or (len(item) == 3 and not isinstance(item[2], Mapping)):
      raise ValueError(f"Loss {item!r} must be (name_or_function, weight[, kwargs]).")
    loss = item[0]
    if len(item) == 3 and item[2]:
      loss = functools.partial(loss if callable(loss) else registry.lookup("loss", loss), **item[2])
    terms.append((loss, float(item[1])))
  return terms


_IMPORTED = re.compile(r"\b[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _split_sum(node):
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
    return _split_sum(node.left) + _split_sum(node.right)
  return [node]


def _parse_product(node, spec) -> tuple[str, float]:
  weight = 1.0
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
    left, right = node.left, node.right
    if isinstance(right, ast.Constant):
      left, right = right, left
    if not isinstance(left, ast.Constant) or not isinstance(left.value, (int, float)):
      raise ValueError(
        f"In loss {spec!r}: a term must be 'weight * name(...)'; got {ast.unparse(node)!r}."
      )
    weight, node = float(left.value), right
  return ast.unparse(node), weight


def _label(spec) -> str:
  if callable(spec):
    fn = getattr(spec, "func", spec)
    return getattr(fn, "__name__", "loss")
  name = registry.parse_spec(spec)[0]
  return name.rpartition(":")[2].rpartition(".")[2]


def make_terms(loss=None, losses: Sequence = ()) -> list[LossTerm]:
  """The terms of ``config.loss`` (on ``logits``/``semantic``) and ``config.losses``.

  Every loss name is looked up here, so an unknown one fails before anything is built, with the
  list of registered losses.
  """
  terms = []
  for spec, weight in parse_loss(loss or ""):
    terms.append(
      LossTerm("logits", "semantic", registry.lookup("loss", spec), weight, label=_label(spec))
    )
  for index, entry in enumerate(losses or ()):
    entry = tuple(entry)
    if len(entry) not in (4, 5) or not isinstance(entry[0], str):
      raise ValueError(
        f"config.losses[{index}] = {entry!r}: expected (output, target, loss, "
        "weight) or (output, target, loss, weight, weight_key), e.g. "
        "('aux_logits', 'semantic', 'cross_entropy', 0.4)."
      )
    output, target, spec, weight = entry[:4]
    weight_key = entry[4] if len(entry) == 5 else None
    try:
      weight = float(weight)
    except (TypeError, ValueError):
      raise ValueError(f"config.losses[{index}]: the weight {weight!r} is not a number.") from None
    for sub_spec, sub_weight in parse_loss(spec):
      terms.append(
        LossTerm(
          output,
          target or None,
          registry.lookup("loss", sub_spec),
          weight * sub_weight,
          weight_key or None,
          label=f"{output}/{_label(sub_spec)}",
        )
      )
  if not terms:
    raise ValueError(
      "The config defines no loss: set config.loss (e.g. 'cross_entropy') or config.losses."
    )
  return terms


def flatten_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
  """Nested output dicts as ``"a/b"`` keys (the top-level keys stay)."""
  flat = {}
  for key, value in outputs.items():
    flat[key] = value
    if isinstance(value, Mapping):
      flat.update({f"{key}/{k}": v for k, v in flatten_outputs(value).items()})
  return flat


def _expand(term: LossTerm, flat: Mapping[str, Any]) -> list[tuple[str, LossTerm]]:
  """``(output key, term)`` pairs: one, or one per entry matched by a ``*`` in the path."""
  if "*" not in term.output:
    if term.output not in flat:
      arrays = sorted(k for k, v in flat.items() if not isinstance(v, Mapping))
      raise KeyError(
        f"The loss term {term.label!r} reads the model output {term.output!r}, "
        f"which this model does not return; it returns {arrays}."
      )
    return [(term.output, term)]
  prefix, _, rest = term.output.partition("*")
  if rest and not rest.startswith("/"):
    raise ValueError(f"Output path {term.output!r}: '*' must stand for a whole path element.")
  keys = sorted({k[len(prefix) :].split("/")[0] for k in flat if k.startswith(prefix)})
  matched = [prefix + k + rest for k in keys if prefix + k + rest in flat]
  if not matched:
    raise KeyError(
      f"The loss term {term.label!r} reads {term.output!r}, which matches no model "
      f"output; the model returns {sorted(flat)}."
    )
  label = term.label.replace(term.output, "", 1)
  return [(key, dataclasses.replace(term, label=key + label)) for key in matched]


class Objective:
  """``objective(outputs, batch) -> (total, {label: value})``: the weighted sum of the terms."""

  def __init__(self, terms: Sequence[LossTerm], ignore_label: int = 255):
    self.terms = list(terms)
    self.ignore_label = ignore_label

  def __call__(self, outputs: Mapping[str, Any], batch: Mapping[str, Any], rng=None):
    """``rng`` (the trainer's key for this step) reaches batch losses with an ``rng`` argument
    (those that sample, e.g. ``mask2former_loss``), folded with the term's index."""
    flat = flatten_outputs(outputs)
    values, total = {}, jnp.zeros((), jnp.float32)
    for index, template in enumerate(self.terms):
      term_rng = None if rng is None else jax.random.fold_in(rng, index)
      for key, term in _expand(template, flat):
        value = jnp.asarray(self._value(term, key, flat, batch, term_rng), jnp.float32)
        label, n = term.label, 1
        while label in values:  # the same loss twice with other arguments
          n += 1
          label = f"{term.label}_{n}"
        values[label] = value
        total = total + term.weight * value
    return total, values

  def _value(self, term: LossTerm, key: str, flat, batch, rng=None):
    for needed in (term.target, term.weight_key):
      if needed is not None and needed not in batch:
        raise KeyError(
          f"The loss term {term.label!r} reads batch[{needed!r}], which the input "
          f"pipeline does not produce (it gives {sorted(batch)}); add the "
          "preprocessing op that makes it to config.data.train_pp."
        )
    if functions.takes_batch(term.loss):
      extra = {"weight_key": term.weight_key} if term.weight_key else {}
      if rng is not None and _takes_rng(term.loss):
        extra["rng"] = rng
      try:
        return term.loss(
          flat,
          batch,
          output_key=key,
          target_key=term.target,
          ignore_label=self.ignore_label,
          **extra,
        )
      except KeyError as e:  # a batch entry the loss reads and the pipeline does not make
        missing = e.args[0] if e.args else None
        if isinstance(missing, str) and missing not in batch and missing not in flat:
          raise KeyError(
            f"The loss term {term.label!r} reads batch[{missing!r}], which the "
            f"input pipeline does not produce (it gives {sorted(batch)}); add the "
            "preprocessing op that makes it to config.data.train_pp (e.g. "
            "'|boundary_distance(16)' for 'boundary_distance')."
          ) from None
        raise
    extra = {"pixel_weights": batch[term.weight_key]} if term.weight_key else {}
    target = batch[term.target] if term.target else None
    return term.loss(flat[key], target, ignore_label=self.ignore_label, **extra)

  def term_labels(self, outputs, batch) -> list[str]:
    """The labels of the values it returns, from abstract outputs and batch (no computation)."""
    return list(jax.eval_shape(lambda o, b: self(o, b)[1], outputs, batch))


def _takes_rng(fn) -> bool:
  try:
    return "rng" in inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False
