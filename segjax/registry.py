"""One registry for models, losses, preprocessing ops and post-processors.

Entries are registered with a decorator under a *kind* (``"model"``, ``"loss"``, ...) and looked up
by a spec string in the big_vision style: ``"unet"`` or ``"unet(features=32, depth=3)"``. The keyword
arguments are Python literals and are bound to the registered callable with ``functools.partial``.
"""
from __future__ import annotations

import ast
import functools
from typing import Any, Callable

_REGISTRY: dict[tuple[str, str], Callable[..., Any]] = {}


def register(kind: str, name: str | None = None):
  """Decorator: registers ``fn`` as ``kind`` under ``name`` (default: the function's name)."""

  def decorator(fn):
    key = (kind, name or fn.__name__)
    if key in _REGISTRY and _REGISTRY[key] is not fn:
      raise ValueError(f"A {kind} named {key[1]!r} is already registered ({_REGISTRY[key]!r}).")
    _REGISTRY[key] = fn
    return fn

  return decorator


def names(kind: str) -> list[str]:
  """The registered names of one kind, sorted."""
  return sorted(name for k, name in _REGISTRY if k == kind)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
  """Splits ``"name(a=1, b='x')"`` into ``("name", {"a": 1, "b": "x"})``."""
  try:
    node = ast.parse(spec.strip(), mode="eval").body
  except SyntaxError as e:
    raise ValueError(f"Cannot parse spec {spec!r}: expected 'name' or 'name(key=value, ...)'.") from e
  if isinstance(node, ast.Name):
    return node.id, {}
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
    try:
      kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except ValueError as e:
      raise ValueError(f"Arguments of spec {spec!r} must be Python literals.") from e
    return node.func.id, kwargs
  raise ValueError(f"Cannot parse spec {spec!r}: expected 'name' or 'name(key=value, ...)' "
                   "with keyword arguments only.")


def lookup(kind: str, spec: str | Callable[..., Any], **kwargs) -> Callable[..., Any]:
  """Returns the callable for ``spec`` with the spec's and ``kwargs`` arguments bound.

  A callable passed as ``spec`` is returned as is (with ``kwargs`` bound), so a plain Python function
  can stand wherever a registered name is accepted.
  """
  if callable(spec):
    return functools.partial(spec, **kwargs) if kwargs else spec
  name, spec_kwargs = parse_spec(spec)
  if (kind, name) not in _REGISTRY:
    raise KeyError(f"Unknown {kind} {name!r}. Registered {kind}s: {', '.join(names(kind)) or 'none'}.")
  bound = {**spec_kwargs, **kwargs}
  fn = _REGISTRY[(kind, name)]
  return functools.partial(fn, **bound) if bound else fn
