import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import losses


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return (
    x
    - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
    - x.max(-1, keepdims=True)
  )


def _random_case(seed=0, shape=(2, 5, 4), num_classes=3, ignore_fraction=0.2):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(*shape, num_classes)).astype(np.float32) * 2
  labels = rng.integers(0, num_classes, size=shape)
  labels[rng.random(shape) < ignore_fraction] = 255
  return logits, labels


def test_cross_entropy_hand_computed():
  logits = np.array([[[[2.0, 0.0], [0.0, 0.0], [5.0, -5.0]]]])  # 3 pixels, 2 classes
  labels = np.array([[[0, 1, 255]]])
  expected = (np.log(1 + np.exp(-2.0)) + np.log(2.0)) / 2  # the ignored pixel is not counted
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-6)


def test_cross_entropy_matches_pytorch_formula_with_weights_and_smoothing():
  logits, labels = _random_case()
  w = np.array([0.5, 2.0, 1.0])
  s = 0.1
  logp = _log_softmax(logits)
  valid = labels != 255
  y = np.where(valid, labels, 0)
  nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0] * w[y]
  smooth = -(logp * w).sum(-1) / 3
  per_pixel = (1 - s) * nll + s * smooth
  expected = per_pixel[valid].sum() / w[y][valid].sum()  # torch: reduction='mean' with weight
  got = losses.cross_entropy(logits, labels, class_weights=w, label_smoothing=s)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_cross_entropy_top_k_keeps_hardest_pixels_per_image():
  logits, labels = _random_case(shape=(2, 4, 5), ignore_fraction=0.0)
  per_pixel = -np.take_along_axis(_log_softmax(logits), labels[..., None], -1)[..., 0]
  hardest = np.sort(per_pixel.reshape(2, -1), axis=1)[:, -5:]  # 25% of 20 pixels
  got = losses.cross_entropy(logits, labels, top_k_percent=0.25)
  np.testing.assert_allclose(got, hardest.mean(), rtol=1e-5)


def test_dice_and_jaccard_hand_computed_binary():
  # Two pixels, probabilities from logits 0 (p=0.5) and ln 3 (p=0.75); targets 1 and 0.
  logits = np.array([[[0.0, np.log(3.0)]]])
  labels = np.array([[[1, 0]]])
  tp, fp, fn = 0.5, 0.75, 0.5
  np.testing.assert_allclose(
    losses.dice_loss(logits, labels, mode="binary"), 1 - 2 * tp / (2 * tp + fp + fn), rtol=1e-6
  )
  np.testing.assert_allclose(
    losses.jaccard_loss(logits, labels, mode="binary"), 1 - tp / (tp + fp + fn), rtol=1e-6
  )
  np.testing.assert_allclose(
    losses.tversky_loss(logits, labels, mode="binary", alpha=0.3, beta=0.7),
    1 - tp / (tp + 0.3 * fp + 0.7 * fn),
    rtol=1e-6,
  )


def test_multiclass_dice_averages_present_classes_and_skips_ignored():
  logits, labels = _random_case()
  labels[labels == 2] = 0  # class 2 absent from the ground truth
  p = np.exp(_log_softmax(logits))
  valid = labels != 255
  t = np.eye(3)[np.where(valid, labels, 0)]
  p, t = p[valid], t[valid]
  dice = 2 * (p * t).sum(0) / (p.sum(0) + t.sum(0))
  np.testing.assert_allclose(losses.dice_loss(logits, labels), np.mean(1 - dice[:2]), rtol=1e-5)


@pytest.mark.parametrize(
  "fn", [losses.cross_entropy, losses.dice_loss, losses.jaccard_loss, losses.tversky_loss]
)
def test_losses_are_zero_and_finite_when_everything_is_ignored(fn):
  logits, labels = _random_case()
  labels[:] = 255
  value, grads = jax.value_and_grad(lambda x: fn(x, labels))(jnp.asarray(logits))
  assert float(value) == 0.0
  assert bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize("fn", [losses.cross_entropy, losses.dice_loss])
def test_ignored_pixels_do_not_change_the_loss(fn):
  logits, labels = _random_case()
  perturbed = logits.copy()
  perturbed[labels == 255] = 100.0
  np.testing.assert_allclose(fn(logits, labels), fn(perturbed, labels), rtol=1e-6)


def test_bf16_logits_give_float32_scalar():
  logits, labels = _random_case()
  value = losses.cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels)
  assert value.shape == () and value.dtype == jnp.float32


def test_parse_loss_expression_and_list_forms():
  assert losses.parse_loss("cross_entropy + 0.5 * dice_loss(smooth=1.0)") == [
    ("cross_entropy", 1.0),
    ("dice_loss(smooth=1.0)", 0.5),
  ]
  assert losses.parse_loss("dice_loss * 2") == [("dice_loss", 2.0)]
  assert losses.parse_loss([("cross_entropy", 1), ("dice_loss(smooth=1.0)", 0.5)]) == [
    ("cross_entropy", 1.0),
    ("dice_loss(smooth=1.0)", 0.5),
  ]
  assert losses.parse_loss("segjax.losses:dice_loss(smooth=2.0)") == [
    ("segjax.losses:dice_loss(smooth=2.0)", 1.0)
  ]
  # Module paths inside a sum, with their arguments; the weight on either side.
  assert losses.parse_loss(
    "cross_entropy + 0.5 * segjax.losses.functions:dice_loss(smooth=2.0)"
    " + segjax.losses:focal_loss * 3"
  ) == [
    ("cross_entropy", 1.0),
    ("segjax.losses.functions:dice_loss(smooth=2.0)", 0.5),
    ("segjax.losses:focal_loss", 3.0),
  ]
  (term,) = losses.make_terms("0.5 * segjax.losses.functions:dice_loss(smooth=2.0)")
  assert term.weight == 0.5 and term.loss.func is losses.dice_loss
  assert term.loss.keywords == {"smooth": 2.0}
  with pytest.raises(ValueError, match="weight"):
    losses.parse_loss("dice_loss * cross_entropy")


def _objective(loss, terms=(), ignore_label=255):
  return losses.Objective(losses.make_terms(loss, terms), ignore_label)


def test_objective_combines_terms_and_accepts_functions():
  logits, labels = _random_case()

  def twice_ce(logits, labels, *, ignore_label=255):
    return 2 * losses.cross_entropy(logits, labels, ignore_label=ignore_label)

  objective = losses.Objective(
    losses.make_terms("cross_entropy + 0.5 * dice_loss", [("logits", "semantic", twice_ce, 0.25)])
  )
  total, terms = objective({"logits": logits}, {"semantic": labels})
  ce = losses.cross_entropy(logits, labels)
  dice = losses.dice_loss(logits, labels)
  np.testing.assert_allclose(total, ce + 0.25 * 2 * ce + 0.5 * dice, rtol=1e-6)
  assert set(terms) == {"cross_entropy", "logits/twice_ce", "dice_loss"}


def test_registered_loss_is_usable_by_name_and_unknown_names_fail_early():
  @losses.register_loss
  def zero_test_loss(logits, labels, *, ignore_label=255):
    return jnp.zeros(())

  total, terms = _objective("zero_test_loss")(
    {"logits": _random_case()[0]}, {"semantic": _random_case()[1]}
  )
  assert float(total) == 0.0 and list(terms) == ["zero_test_loss"]
  with pytest.raises(KeyError, match="Unknown loss 'dice'.*dice_loss"):
    losses.make_terms("cross_entropy + dice")
  with pytest.raises(ValueError, match=r"config.losses\[0\].*expected \(output, target, loss"):
    losses.make_terms("", [("logits", "cross_entropy", 1.0)])
  with pytest.raises(ValueError, match="no loss"):
    losses.make_terms("", [])


def test_focal_loss_hand_computed_and_reduces_to_cross_entropy():
  logits = np.array([[[[0.0, 0.0], [np.log(3.0), 0.0]]]])  # p_y = 0.5 and 0.75
  labels = np.array([[[0, 0]]])
  expected = (0.25 * np.log(2) + 0.0625 * -np.log(0.75)) / 2
  np.testing.assert_allclose(losses.focal_loss(logits, labels), expected, rtol=1e-6)
  logits, labels = _random_case()
  np.testing.assert_allclose(
    losses.focal_loss(logits, labels, gamma=0.0), losses.cross_entropy(logits, labels), rtol=1e-5
  )
  alpha = np.array([0.2, 0.3, 0.5])
  valid = labels != 255
  y = np.where(valid, labels, 0)
  p = np.exp(np.take_along_axis(_log_softmax(logits), y[..., None], -1)[..., 0])
  ref = (-alpha[y] * (1 - p) ** 2 * np.log(p))[valid].mean()
  np.testing.assert_allclose(losses.focal_loss(logits, labels, alpha=alpha), ref, rtol=1e-5)


def test_binary_focal_and_bce_match_their_formulas():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 4, 4)).astype(np.float32) * 3
  t = rng.integers(0, 2, size=(2, 4, 4))
  t[0, 0] = 255
  keep = t != 255
  s = 1 / (1 + np.exp(-x))
  tt = np.where(keep, t, 0)
  pt = np.where(tt == 1, s, 1 - s)
  ref = (-((1 - pt) ** 2) * np.log(pt) * (0.25 * tt + 0.75 * (1 - tt)))[keep].mean()
  np.testing.assert_allclose(losses.focal_loss(x, t, mode="binary", alpha=0.25), ref, rtol=1e-5)
  ref_bce = (-(3.0 * tt * np.log(s) + (1 - tt) * np.log(1 - s)))[keep].mean()
  np.testing.assert_allclose(
    losses.binary_cross_entropy(x[..., None], t, pos_weight=3.0), ref_bce, rtol=1e-5
  )


def test_focal_tversky_is_tversky_to_a_power():
  logits, labels = _random_case()
  tversky = losses.tversky_loss(logits, labels, alpha=0.3, beta=0.7)
  np.testing.assert_allclose(
    losses.focal_tversky_loss(logits, labels, gamma=1.0), tversky, rtol=1e-5
  )
  tp, fp, fn, support = losses.soft_confusion(logits, labels)
  ti = np.asarray(tp / (tp + 0.3 * fp + 0.7 * fn))
  np.testing.assert_allclose(
    losses.focal_tversky_loss(logits, labels), np.mean((1 - ti) ** 0.75), rtol=1e-5
  )


def test_lovasz_equals_jaccard_loss_on_hard_predictions():
  from segjax import metrics

  rng = np.random.default_rng(5)
  labels = rng.integers(0, 3, size=(2, 6, 5))
  labels[0, 0] = 255
  pred = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, 3, size=labels.shape))
  pred = np.where(labels == 255, 0, pred)
  logits = 100.0 * np.eye(3)[pred]  # probabilities exactly 0 / 1
  iou = metrics.iou(np.asarray(metrics.confusion_matrix(pred, labels, 3)))
  np.testing.assert_allclose(
    losses.lovasz_softmax_loss(logits, labels), np.mean(1 - iou), rtol=1e-5
  )
  # A perfect prediction has zero loss; a soft one is differentiable.
  np.testing.assert_allclose(
    losses.lovasz_softmax_loss(100.0 * np.eye(3)[np.where(labels == 255, 0, labels)], labels),
    0.0,
    atol=1e-6,
  )
  grads = jax.grad(lambda x: losses.lovasz_softmax_loss(x, labels))(jnp.asarray(logits / 50.0))
  assert bool(jnp.all(jnp.isfinite(grads))) and bool(jnp.any(grads != 0))


def _ce(x, y, ignore_label):
  return losses.cross_entropy(x, y, ignore_label=ignore_label)


BROKEN_LOSSES = {
  "scalar float32": lambda x, y, *, ignore_label=255: jnp.mean(x, axis=(1, 2, 3)),
  "jit": lambda x, y, *, ignore_label=255: _ce(x, y, ignore_label) * float(jnp.sum(y > 0) > 0),
  "gradient": lambda x, y, *, ignore_label=255: (
    jnp.mean((jnp.argmax(x, -1) != y).astype(jnp.float32)) + 0 * jnp.sum(jax.lax.stop_gradient(x))
  ),
  "absent class": lambda x, y, *, ignore_label=255: (
    jnp.mean(
      jnp.sum(jax.nn.softmax(x) * jax.nn.one_hot(y, x.shape[-1]), (0, 1, 2))
      / jnp.sum(jax.nn.one_hot(y, x.shape[-1]), (0, 1, 2))
    )
    + _ce(x, y, ignore_label)
  ),
  "all pixels ignored": lambda x, y, *, ignore_label=255: (
    jnp.sum(jnp.where(y != ignore_label, -jax.nn.log_softmax(x)[..., 0], 0.0))
    / jnp.sum(y != ignore_label)
  ),
  "extreme logits": lambda x, y, *, ignore_label=255: (
    _ce(x, y, ignore_label)
    + jnp.mean(jnp.log(jax.nn.softmax(x)) * 0.0 + jnp.log(jnp.exp(x).sum(-1)))
  ),
  "bf16 logits": lambda x, y, *, ignore_label=255: (
    jnp.mean(x * 0).astype(x.dtype) + _ce(x, y, ignore_label).astype(x.dtype)
  ),
  "blind to ignored pixels": lambda x, y, *, ignore_label=255: (
    _ce(x, y, ignore_label) + jnp.mean(x**2)
  ),
  "batch order": lambda x, y, *, ignore_label=255: _ce(x[:1], y[:1], ignore_label),
}


@pytest.mark.parametrize("check", sorted(BROKEN_LOSSES))
def test_check_loss_rejects_a_loss_broken_in_each_way(check):
  with pytest.raises(losses.LossCheckError) as error:
    losses.check_loss(BROKEN_LOSSES[check])
  assert f"- {check}:" in str(error.value)
