"""The on-device Hungarian matcher (`segjax.losses.matching`), phase by phase and whole: the
shortest-path search against Dijkstra in NumPy, the dual update against the optimality conditions,
the augmentation on a hand-made path, and the assignment against SciPy on random and degenerate
cost matrices (ties, infinities, NaN, rectangular, rows left out)."""

import heapq

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_assignment

from segjax.losses import matching


def dijkstra(cost, u, v, row4col, r):
  """Distances from row r to every column on the reduced costs, stepping column j -> its row."""
  n, m = cost.shape
  distance = np.full(m, np.inf)
  heap = [(0.0, -1, r)]  # (distance to reach the row, via column, row)
  done_rows = set()
  while heap:
    d, _, i = heapq.heappop(heap)
    if i in done_rows:
      continue
    done_rows.add(i)
    for j in range(m):
      through = d + cost[i, j] - u[i] - v[j]
      if through < distance[j] - 1e-9:
        distance[j] = through
        if row4col[j] >= 0:
          heapq.heappush(heap, (through, j, int(row4col[j])))
  return distance


def partial_state(cost, rows):
  """The `Assignment` after adding ``rows`` rows with the matcher."""
  state = matching.empty(*cost.shape)
  for r in range(rows):
    state = matching.add_row(jnp.asarray(cost), state, r)
  return state


@pytest.mark.slow
def test_shortest_path_ends_at_the_nearest_free_column_with_dijkstras_distances():
  rng = np.random.default_rng(0)
  for trial in range(8):
    n, m = rng.integers(2, 7), 0
    m = n + rng.integers(0, 4)
    cost = rng.uniform(0, 10, size=(n, m)).astype(np.float32)
    r = int(rng.integers(1, n))
    state = partial_state(cost, r)  # rows 0..r-1 assigned: row r searches through them
    path = matching.shortest_path(jnp.asarray(cost), state, r)
    want = dijkstra(cost, np.asarray(state.u), np.asarray(state.v), np.asarray(state.row4col), r)
    free = np.asarray(state.row4col) == -1
    sink = int(path.sink)
    assert free[sink], trial
    np.testing.assert_allclose(float(path.length), want[free].min(), rtol=1e-5, atol=1e-5)
    seen = np.asarray(path.seen_cols)
    np.testing.assert_allclose(np.asarray(path.distance)[seen], want[seen], rtol=1e-5, atol=1e-5)
    assert (want[~seen] >= float(path.length) - 1e-5).all()  # settled in order of distance


@pytest.mark.slow
def test_dual_update_keeps_reduced_costs_non_negative_and_zero_on_the_assignment():
  rng = np.random.default_rng(1)
  for _ in range(8):
    n = int(rng.integers(2, 7))
    m = n + int(rng.integers(0, 4))
    cost = rng.normal(size=(n, m)).astype(np.float32)
    state = matching.empty(n, m)
    for r in range(n):  # after every row, not only the last
      state = matching.add_row(jnp.asarray(cost), state, r)
      u, v = np.asarray(state.u), np.asarray(state.v)
      col4row = np.asarray(state.col4row)
      assigned = col4row >= 0
      reduced = cost[assigned] - u[assigned, None] - v[None]
      assert (reduced >= -1e-5).all()
      np.testing.assert_allclose(
        reduced[np.arange(assigned.sum()), col4row[assigned]], 0, atol=1e-5
      )


def test_augment_shifts_the_assignments_along_the_path():
  """Rows 0 and 1 hold columns 0 and 1; row 2's path: column 2 (free) <- row 1 <- column 1 <-
  row 0 <- column 0 <- row 2. After it: row 2 -> 0, row 0 -> 1, row 1 -> 2."""
  state = matching.Assignment(
    jnp.zeros(3), jnp.zeros(4), jnp.array([0, 1, -1]), jnp.array([0, 1, -1, -1])
  )
  path = matching.Path(
    sink=jnp.array(2),
    length=jnp.float32(0),
    distance=jnp.zeros(4),
    previous=jnp.array([2, 0, 1, -1]),
    seen_rows=jnp.ones(3, bool),
    seen_cols=jnp.array([True, True, True, False]),
  )
  out = matching.augment(state, 2, path)
  np.testing.assert_array_equal(out.col4row, [1, 2, 0])
  np.testing.assert_array_equal(out.row4col, [2, 0, 1, -1])


def check_optimal(cost, got):
  rows, cols = scipy_assignment(cost)
  assert len(set(got.tolist())) == len(got)  # distinct columns
  np.testing.assert_allclose(
    cost[np.arange(len(got)), got].sum(), cost[rows, cols].sum(), rtol=1e-5, atol=1e-5
  )


@pytest.mark.slow
def test_the_assignment_equals_scipy_on_random_and_degenerate_costs():
  rng = np.random.default_rng(2)
  solve = jax.jit(jax.vmap(matching.linear_sum_assignment))
  for n, m in ((1, 1), (1, 4), (5, 5), (7, 12)):  # square and rectangular
    cost = rng.normal(size=(20, n, m)).astype(np.float32)
    got = np.asarray(solve(jnp.asarray(cost), jnp.ones((20, n), bool)))
    for c, g in zip(cost, got):
      np.testing.assert_array_equal(g, scipy_assignment(c)[1])
  ties = rng.integers(0, 3, size=(30, 6, 8)).astype(np.float32)  # many optimal assignments
  for c, g in zip(ties, np.asarray(solve(jnp.asarray(ties), jnp.ones((30, 6), bool)))):
    check_optimal(c, g)
  constant = np.zeros((1, 4, 6), np.float32)  # every assignment optimal
  assert len(set(np.asarray(solve(jnp.asarray(constant), jnp.ones((1, 4), bool)))[0])) == 4
  # Infinities and NaN: forbidden pairs (as +BIG); a finite optimum exists and is found.
  cost = rng.uniform(size=(20, 5, 7)).astype(np.float32)
  forbidden = rng.random((20, 5, 7)) < 0.3
  for k in range(20):
    forbidden[k, np.arange(5), rng.permutation(7)[:5]] = False  # keep a feasible assignment
  cost_inf = np.where(forbidden, np.inf, cost)
  cost_nan = np.where(forbidden, np.nan, cost)
  for costs in (cost_inf, cost_nan):
    got = np.asarray(solve(jnp.asarray(costs), jnp.ones((20, 5), bool)))
    for c, g in zip(np.where(forbidden, 1e6, cost), got):
      np.testing.assert_array_equal(g, scipy_assignment(c)[1])
  valid = rng.random((20, 6)) < 0.5  # rows left out
  cost = rng.normal(size=(20, 6, 9)).astype(np.float32)
  got = np.asarray(solve(jnp.asarray(cost), jnp.asarray(valid)))
  for c, v, g in zip(cost, valid, got):
    np.testing.assert_array_equal(g[v], scipy_assignment(c[v])[1])
    assert (g[~v] == -1).all()
  with pytest.raises(ValueError, match="3 rows cannot take distinct columns of 2"):
    matching.linear_sum_assignment(jnp.zeros((3, 2)))
