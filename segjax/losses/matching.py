"""The minimum-cost assignment (Hungarian matching) on the device: SciPy's
``linear_sum_assignment`` algorithm (shortest augmenting paths with dual variables; Crouse, "On
implementing 2D rectangular assignment algorithms", IEEE TAES 2016), in ``jnp`` and
``lax`` loops, so that it compiles for any device and ``vmap``\\ s over a batch of problems.

Rows are added one at a time. For row ``r`` the three phases are:

1. `shortest_path`: a Dijkstra search from ``r`` over the columns, on the reduced costs
   ``cost[i, j] − u[i] − v[j]`` (never negative), alternating column → the row assigned to it,
   until it reaches a free column (the sink);
2. `update_duals`: the potentials ``u`` (rows) and ``v`` (columns) move by the distances found,
   so that reduced costs stay non-negative and are zero along every assigned pair;
3. `augment`: the assignments along the path from the sink back to ``r`` shift by one, which
   assigns ``r`` and keeps every row seen on the path assigned.

After all rows, ``u[i] + v[j] ≤ cost[i, j]`` everywhere with equality on the assignment: a
certificate that it is optimal. Each phase has its own test (tests/test_matching.py).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

BIG = 1e6  # stands for NaN/inf costs, as transformers' matcher does with the largest float
_INF = float("inf")


class Assignment(NamedTuple):
  """The state between rows: row potentials ``u`` ``[n]``, column potentials ``v`` ``[m]``, the
  column of each row ``col4row`` ``[n]`` and the row of each column ``row4col`` ``[m]`` (-1:
  none)."""

  u: jax.Array
  v: jax.Array
  col4row: jax.Array
  row4col: jax.Array


class Path(NamedTuple):
  """A shortest augmenting path from a row: the free column it ends at (``sink``), its length
  (``length``: the reduced cost to the sink), the distance of each column (``distance`` ``[m]``,
  final for the columns in ``seen_cols``), each column's predecessor row (``previous`` ``[m]``),
  and the rows and columns the search settled."""

  sink: jax.Array
  length: jax.Array
  distance: jax.Array
  previous: jax.Array
  seen_rows: jax.Array
  seen_cols: jax.Array


def empty(n: int, m: int) -> Assignment:
  return Assignment(
    jnp.zeros(n, jnp.float32),
    jnp.zeros(m, jnp.float32),
    jnp.full(n, -1, jnp.int32),
    jnp.full(m, -1, jnp.int32),
  )


def shortest_path(cost: jax.Array, state: Assignment, r) -> Path:
  """Phase 1: the shortest path from row ``r`` to a free column on the reduced costs. Each step
  settles the row ``i`` just reached: the distances of the unseen columns through ``i`` are
  relaxed; the closest unseen column is settled (among ties, a free one first, as SciPy); a free
  column ends the search, an assigned one continues from its row."""
  n, m = cost.shape
  u, v, _, row4col = state

  def step(search):
    i, length, sink, distance, previous, seen_rows, seen_cols = search
    seen_rows = seen_rows.at[i].set(True)
    through_i = length + cost[i] - u[i] - v
    shorter = ~seen_cols & (through_i < distance)
    previous = jnp.where(shorter, i, previous)
    distance = jnp.where(shorter, through_i, distance)
    open_distance = jnp.where(seen_cols, _INF, distance)
    nearest = open_distance.min()
    closest = open_distance == nearest
    free = closest & (row4col == -1)
    j = jnp.where(free.any(), jnp.argmax(free), jnp.argmax(closest))
    seen_cols = seen_cols.at[j].set(True)
    ends = row4col[j] == -1
    return (
      jnp.where(ends, i, row4col[j]),
      nearest,
      jnp.where(ends, j, -1),
      distance,
      previous,
      seen_rows,
      seen_cols,
    )

  start = (
    r,
    jnp.float32(0),
    -1,
    jnp.full(m, _INF),
    jnp.full(m, -1),
    jnp.zeros(n, bool),
    jnp.zeros(m, bool),
  )
  _, length, sink, distance, previous, seen_rows, seen_cols = jax.lax.while_loop(
    lambda s: s[2] < 0, step, start
  )
  return Path(sink, length, distance, previous, seen_rows, seen_cols)


def update_duals(state: Assignment, r, path: Path) -> Assignment:
  """Phase 2: ``u[r] += length``; each other row seen, ``u[i] += length − distance(col of i)``;
  each column seen, ``v[j] −= length − distance(j)``."""
  u, v, col4row, row4col = state
  rows = jnp.arange(u.shape[0])
  u = u.at[r].add(path.length)
  others = path.seen_rows & (rows != r)
  u = u + jnp.where(others, path.length - path.distance[jnp.clip(col4row, 0)], 0.0)
  v = v - jnp.where(path.seen_cols, path.length - path.distance, 0.0)
  return Assignment(u, v, col4row, row4col)


def augment(state: Assignment, r, path: Path) -> Assignment:
  """Phase 3: from the sink back to row ``r``, each column on the path takes its predecessor row,
  and that row the column (its previous column goes on to the next step)."""
  u, v, col4row, row4col = state

  def step(walk):
    j, col4row, row4col, _ = walk
    i = path.previous[j]
    row4col = row4col.at[j].set(i)
    before = col4row[i]
    col4row = col4row.at[i].set(j)
    return before, col4row, row4col, i == r

  _, col4row, row4col, _ = jax.lax.while_loop(
    lambda w: ~w[3], step, (path.sink, col4row, row4col, False)
  )
  return Assignment(u, v, col4row, row4col)


def add_row(cost: jax.Array, state: Assignment, r) -> Assignment:
  """The three phases for row ``r``."""
  path = shortest_path(cost, state, r)
  return augment(update_duals(state, r, path), r, path)


def solve(cost: jax.Array, row_valid: jax.Array | None = None) -> Assignment:
  """The final `Assignment` of ``cost`` ``[n,m]`` (n ≤ m; NaN and ±inf as ±`BIG`), rows where
  ``row_valid`` is False left out."""
  n, m = cost.shape
  if n > m:
    raise ValueError(f"linear_sum_assignment: {n} rows cannot take distinct columns of {m}")
  cost = jnp.nan_to_num(cost.astype(jnp.float32), nan=BIG, posinf=BIG, neginf=-BIG)
  row_valid = jnp.ones(n, bool) if row_valid is None else row_valid

  def maybe_add_row(r, state):
    return jax.lax.cond(row_valid[r], lambda: add_row(cost, state, r), lambda: state)

  return jax.lax.fori_loop(0, n, maybe_add_row, empty(n, m))


def linear_sum_assignment(cost: jax.Array, row_valid: jax.Array | None = None) -> jax.Array:
  """The minimum-cost assignment of the rows of ``cost`` ``[n,m]`` (n ≤ m) to distinct columns:
  ``col4row`` ``[n]`` int32 (-1 for rows where ``row_valid`` is False, which are left out)."""
  return solve(cost, row_valid).col4row
