"""Plans compiled for TPU slices on this CPU (libtpu's compiler; nothing runs): memory per device,
FLOPs, the fits / does-not-fit verdict, FSDP's memory saving, multi-host slices."""
import json
import os
import re
import subprocess
import sys

import pytest

from segjax import plan

from conftest import ROOT, load_config


def _small_config():
  config = load_config("unet_shapes")
  config.model.update(dict(features=4, depth=2))
  config.data.update(dict(image_size=32, crop_size=(32, 32)))
  config.eval_batch_size = 4
  config.eval_tta = ""  # one forward pass: the plan's mechanics, not the quickstart's TTA
  return config


@pytest.mark.parametrize("topology,hosts", [("v5e:4x4", 4)])  # v5e:2x2: test_plan_main_...
def test_plan_of_a_small_recipe_compiles_the_trainer_steps(topology, hosts):
  config = _small_config()
  result = plan.plan(config, topology)
  devices = {"v5e:2x2": 4, "v5e:4x4": 16}[topology]
  assert result["devices"] == devices and result["hosts"] == hosts
  assert result["batch_size"] == max(8, devices) and result["batch_size"] % devices == 0
  for step in ("train", "eval"):
    program = result[step]
    assert program["fits"] and program["flops_per_device"] > 0
    memory = program["memory_gib"]
    assert 0 < memory["total"] < memory["hbm"] == 16.0
    assert program["step_seconds"] > 0 and 0 < program["mfu"] <= 1
  # The state is the trainer's: 486k-parameter UNet at width 8 here is 4x fewer; AdamW keeps two
  # moments, so parameters + optimizer state are 3 float32 copies (replicated, fsdp=1).
  params = result["parameters"]
  assert result["train"]["memory_gib"]["state"] * 2**30 == pytest.approx(3 * 4 * params, rel=0.01)
  assert result["schedule"]["steps"] == pytest.approx(
      config.num_train_steps * config.batch_size / result["batch_size"])
  assert result["eval"]["image_size"] == [32, 32]


def test_fsdp_over_four_chips_shrinks_deeplabv3_r101_state_memory():
  config = load_config("deeplabv3_cityscapes")  # full width: 60 M parameters
  data_parallel = plan.state_bytes(config, "v5e:2x2", fsdp=1)
  split = plan.state_bytes(config, "v5e:2x2", fsdp=4)
  assert data_parallel["compiled"] >= 3 * split["compiled"]
  for measured in (data_parallel, split):  # the compiler's sizes and the shards' sizes agree
    assert measured["compiled"] == pytest.approx(measured["shards"], rel=0.01)
  assert data_parallel["compiled"] > 2 * 4 * 58e6  # float32 parameters + SGD momentum


def test_a_batch_that_cannot_fit_is_reported_not_raised():
  config = _small_config()
  config.data.update(dict(image_size=512, crop_size=(512, 512)))
  config.model.features = 64
  result = plan.plan(config, "v5e:2x2", batch_size=4 * 2048, with_eval=False)
  assert result["train"]["fits"] is False
  assert "RESOURCE_EXHAUSTED" in result["train"]["compiler_error"]
  row = plan.markdown_row(result)
  assert "**no**" in row and "—%" not in row
  # The compiler's figure for what did not fit, as the table shows it.
  needed = re.search(r"temporaries \(([\d.]+)G\)", result["train"]["compiler_error"])
  assert needed and f"temporaries {float(needed.group(1)):.1f} > " in row


def test_a_near_miss_is_shown_with_two_decimals():
  result = {"model": "m", "topology": "v5e:4x8", "batch_size": 32, "reference": "",
            "train": {"fits": False, "compiler_error": "RESOURCE_EXHAUSTED: Ran out of memory on "
                      "HBM, the total memory required for HLO temporaries (15.78G) exceeds "
                      "available HBM (15.75G)."}}
  assert "| temporaries 15.78 > 15.75 | **no** |" in plan.markdown_row(result)
  result["train"]["compiler_error"] = result["train"]["compiler_error"].replace("15.78", "23.3")
  assert "| temporaries 23.3 > 15.8 | **no** |" in plan.markdown_row(result)
  other = dict(result, topology="v4:2x2x4")
  assert len(plan.markdown_table([other, result]).splitlines()) == 2 + 2  # header, rule, 2 rows
  table = plan.markdown_table([other, result], topology="v5e:4x8").splitlines()
  assert len(table) == 3 and "| m | v5e:4x8 |" in table[2]


def test_bad_topologies_and_batches_are_named():
  with pytest.raises(plan.PlanError, match="Unknown topology 'v9:2x2'"):
    plan.plan(_small_config(), "v9:2x2")
  with pytest.raises(plan.PlanError, match="--batch_size=6 does not divide over 4 devices"):
    plan.plan(_small_config(), "v5e:2x2", batch_size=6)
  assert plan.plan_batch_size(_small_config(), 32, None) == (
      32, "recipe batch 8 raised to 32 (1 per device); scale the learning rate with it")


def test_plan_main_writes_json(tmp_path):
  config = tmp_path / "small.py"
  config.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_plan import _small_config\n\n"
                    "def get_config():\n  return _small_config()\n" % os.path.join(ROOT, "tests"))
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "plan.py"), f"--config={config}",
       "--topology=v5e:2x2", "--no_eval", f"--output={tmp_path}"],
      capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| small | v5e:2x2 | 8 |" in result.stdout
  written = json.load(open(tmp_path / "plan_small_v5e_2x2.json"))
  assert written["train"]["fits"] and "eval" not in written
