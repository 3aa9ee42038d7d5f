import pytest

from segjax import registry


def test_parse_spec_reads_name_and_literal_kwargs():
  assert registry.parse_spec("unet") == ("unet", {})
  assert registry.parse_spec(" unet(features=32, depth=3, name='x', scales=(0.5, 1.0)) ") == (
      "unet", {"features": 32, "depth": 3, "name": "x", "scales": (0.5, 1.0)})


@pytest.mark.parametrize("bad", ["unet(", "unet(3)", "a.b", "unet(x=y)"])
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


def test_unknown_name_lists_registered_names():
  with pytest.raises(KeyError, match="Unknown model 'unett'.*unet"):
    registry.lookup("model", "unett")


def test_registering_a_name_twice_is_an_error():
  registry.register("test_kind", "once")(lambda: 1)
  with pytest.raises(ValueError, match="already registered"):
    registry.register("test_kind", "once")(lambda: 2)
