import pytest

from segjax import registry


def test_parse_spec_reads_name_and_literal_arguments():
  assert registry.parse_spec("unet") == ("unet", (), {})
  assert registry.parse_spec(" unet(features=32, depth=3, name='x', scales=(0.5, 1.0)) ") == (
    "unet",
    (),
    {"features": 32, "depth": 3, "name": "x", "scales": (0.5, 1.0)},
  )
  assert registry.parse_spec("random_scale(0.5, 2.0)") == ("random_scale", (0.5, 2.0), {})
  assert registry.parse_spec("pkg.mod:fn(1, a='b')") == ("pkg.mod:fn", (1,), {"a": "b"})
  assert registry.parse_spec("pkg.mod:Cls.method") == ("pkg.mod:Cls.method", (), {})


@pytest.mark.parametrize("bad", ["unet(", "a.b", "unet(x=y)", "unet(**d)"])
def test_parse_spec_rejects_malformed(bad):
  with pytest.raises(ValueError, match="spec"):
    registry.parse_spec(bad)


def test_lookup_binds_arguments_and_overrides():
  @registry.register("test_kind", "power")
  def power(x, exponent=2):
    return x**exponent

  assert registry.lookup("test_kind", "power")(3) == 9
  assert registry.lookup("test_kind", "power(exponent=3)")(2) == 8
  assert registry.lookup("test_kind", "power(exponent=3)", exponent=1)(5) == 5
  assert registry.lookup("test_kind", lambda x: -x)(4) == -4  # a function stands for a name
  assert registry.lookup("test_kind", "power(3)")(2) == 9  # positional: binds the first argument


def test_importable_functions_stand_for_names_and_are_recorded_by_name():
  fn = registry.lookup("loss", "segjax.losses.functions:dice_loss(smooth=1.0)")
  from segjax.losses import functions

  assert fn.func is functions.dice_loss and fn.keywords == {"smooth": 1.0}
  assert registry.importable_name(functions.dice_loss) == "segjax.losses.functions:dice_loss"
  assert registry.importable_name(lambda x: x) is None
  with pytest.raises(KeyError, match="Cannot import 'segjax.nothing:f'"):
    registry.lookup("loss", "segjax.nothing:f")


def test_unknown_name_lists_registered_names():
  with pytest.raises(KeyError, match="Unknown model 'unett'.*unet"):
    registry.lookup("model", "unett")


def test_registering_a_name_twice_is_an_error():
  registry.register("test_kind", "once")(lambda: 1)
  with pytest.raises(ValueError, match="already registered"):
    registry.register("test_kind", "once")(lambda: 2)
