"""One registry for models, losses, preprocessing ops, post-processors, training metrics,
optimizers, learning-rate schedules and datasets.

Entries are registered with a decorator under a *kind* (``"model"``, ``"loss"``, ``"pp"``,
``"postprocess"``, ``"train_metric"``, ``"optimizer"``, ``"schedule"``, ``"dataset"``) and looked up by a spec string in the big_vision style: ``"unet"``,
``"unet(features=32, depth=3)"`` or ``"random_scale(0.5, 2.0)"``; the arguments are Python literals
bound to the registered callable with ``functools.partial``. A spec may also name any importable
function, ``"my_project.losses:boundary_loss(theta=3)"``, so that a config file that holds only
strings can reach code outside segjax (and ``config.json`` can record it).
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
from typing import Any, Callable

_REGISTRY: dict[tuple[str, str], Callable[..., Any]] = {}
_IMPORTABLE = re.compile(r"^\s*([A-Za-z_][\w.]*):([A-Za-z_][\w.]*)\s*(\(.*\))?\s*$", re.S)
# How each kind is called in error messages ("Unknown loss ... Registered losses: ...").
_NAMES = {
  "loss": ("loss", "losses"),
  "pp": ("preprocessing op", "preprocessing ops"),
  "postprocess": ("post-processor", "post-processors"),
  "train_metric": ("training metric", "training metrics"),
  "schedule": ("learning-rate schedule", "learning-rate schedules"),
}


def register(kind: str, name: str | None = None):
  """Decorator: registers ``fn`` as ``kind`` under ``name`` (default: the function's name)."""

  def decorator(fn):
    key = (kind, name or fn.__name__)
    if key in _REGISTRY and _REGISTRY[key] is not fn:
      raise ValueError(f"A {kind} named {key[1]!r} is already registered ({_REGISTRY[key]!r}).")
    _REGISTRY[key] = fn
    return fn

  return decorator


def get(kind: str, name: str) -> Any:
  """The entry registered as ``kind`` under exactly ``name`` (no spec parsing)."""
  if (kind, name) not in _REGISTRY:
    raise KeyError(
      f"Unknown {describe(kind)} {name!r}. Registered {describe(kind, True)}: "
      f"{', '.join(names(kind)) or 'none'}."
    )
  return _REGISTRY[(kind, name)]


def names(kind: str) -> list[str]:
  """The registered names of one kind, sorted."""
  return sorted(name for k, name in _REGISTRY if k == kind)


def describe(kind: str, plural: bool = False) -> str:
  """How ``kind`` is called in messages: ``"preprocessing op"`` for ``"pp"``, ..."""
  singular, many = _NAMES.get(kind, (kind, kind + "s"))
  return many if plural else singular


def parse_spec(spec: str) -> tuple[str, tuple, dict[str, Any]]:
  """Splits ``"name(1, 2, a=3, b='x')"`` into ``("name", (1, 2), {"a": 3, "b": "x"})``.

  ``name`` may be ``"package.module:function"`` (an importable function)."""
  importable = _IMPORTABLE.match(spec)
  if importable:
    name, arguments = f"{importable.group(1)}:{importable.group(2)}", importable.group(3) or ""
    _, args, kwargs = parse_spec("f" + arguments)
    return name, args, kwargs
  try:
    node = ast.parse(spec.strip(), mode="eval").body
  except SyntaxError as e:
    raise ValueError(
      f"Cannot parse spec {spec!r}: expected 'name', 'name(value, key=value, ...)' "
      "or 'package.module:function(...)'."
    ) from e
  if isinstance(node, ast.Name):
    return node.id, (), {}
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
    try:
      args = tuple(ast.literal_eval(arg) for arg in node.args)
      kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except ValueError as e:
      raise ValueError(
        f"Arguments of spec {spec!r} must be Python literals (numbers, strings, "
        "tuples, lists, dicts)."
      ) from e
    if None in kwargs:
      raise ValueError(f"Cannot parse spec {spec!r}: '**' arguments are not allowed.")
    return node.func.id, args, kwargs
  raise ValueError(
    f"Cannot parse spec {spec!r}: expected 'name', 'name(value, key=value, ...)' "
    "or 'package.module:function(...)'."
  )


def is_importable(spec: str) -> bool:
  """Whether ``spec`` names an importable function: ``"package.module:function(...)"``."""
  return bool(_IMPORTABLE.match(spec))


def import_object(name: str) -> Any:
  """The object ``"package.module:attribute"`` (``attribute`` may be dotted, ``Class.method``)."""
  module_name, _, attribute = name.partition(":")
  try:
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
      target = getattr(target, part)
  except (ImportError, AttributeError) as e:
    raise KeyError(f"Cannot import {name!r}: {e}.") from e
  return target


def import_callable(name: str) -> Callable[..., Any]:
  """The function ``"package.module:function"`` (``function`` may be dotted, ``Class.method``)."""
  target = import_object(name)
  if not callable(target):
    raise KeyError(f"{name!r} is not callable.")
  return target


def importable_name(fn: Callable[..., Any]) -> str | None:
  """``"module:qualname"`` of a module-level function (None for lambdas and local functions)."""
  module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
  if not module or "<" in qualname or module == "__main__":
    return None
  return f"{module}:{qualname}"


def lookup(kind: str, spec: str | Callable[..., Any], *args, **kwargs) -> Callable[..., Any]:
  """Returns the callable for ``spec`` with the spec's and the given arguments bound.

  A callable passed as ``spec`` is returned as is (with the arguments bound), so a plain Python
  function can stand wherever a registered name is accepted.
  """
  if callable(spec):
    return functools.partial(spec, *args, **kwargs) if args or kwargs else spec
  name, spec_args, spec_kwargs = parse_spec(spec)
  if ":" in name:
    fn = import_callable(name)
  elif (kind, name) in _REGISTRY:
    fn = _REGISTRY[(kind, name)]
  else:
    raise KeyError(
      f"Unknown {describe(kind)} {name!r}. Registered {describe(kind, True)}: "
      f"{', '.join(names(kind)) or 'none'}."
    )
  bound_args, bound = (*spec_args, *args), {**spec_kwargs, **kwargs}
  return functools.partial(fn, *bound_args, **bound) if bound_args or bound else fn
