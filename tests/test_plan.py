"""Plans compiled for TPU slices on this CPU (libtpu's compiler; nothing runs): memory per device,
FLOPs, the fits / does-not-fit verdict, FSDP's memory saving, multi-host slices."""

import json
import os
import re
import subprocess
import sys

import pytest

from segjax import plan
from segjax import plan_table

from conftest import ROOT, load_config


def _small_config():
  config = load_config("unet_shapes")
  config.model.update(dict(features=4, depth=2))
  config.data.update(dict(image_size=32, crop_size=(32, 32)))
  config.eval_batch_size = 4
  config.inference.tta = ""  # one forward pass: the plan's mechanics, not the quickstart's TTA
  return config


@pytest.mark.slow
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
    assert 0 < memory["total"] < memory["hbm"]
    assert program["step_seconds"] > 0 and 0 < program["mfu"] <= 1
  # The state is the trainer's: 486k-parameter UNet at width 8 here is 4x fewer; AdamW keeps two
  # moments, so parameters + optimizer state are 3 float32 copies (replicated, fsdp=1).
  params = result["parameters"]
  assert result["train"]["memory_gib"]["state"] * 2**30 == pytest.approx(3 * 4 * params, rel=0.01)
  assert result["schedule"]["steps"] == pytest.approx(
    config.num_train_steps * config.batch_size / result["batch_size"]
  )
  assert result["eval"]["image_size"] == [32, 32]


def state_bytes(config, topology: str, fsdp: int) -> dict:
  """Bytes per device of the trainer's train state of ``config`` on ``topology``: the output size
  of a compiled program that allocates the state's arrays in the trainer's shardings (zeros: it
  compiles in seconds where the initialisers take minutes), and the sum over the shards."""
  import jax
  import jax.numpy as jnp
  from segjax import models, optim, runs, sharding, train
  from segjax.data import pipeline

  target = plan.target(topology)
  mesh = sharding.make_mesh(devices=target.devices, fsdp=fsdp)
  model = models.from_config(
    config.model, pipeline.dataset_info(config.data).descriptor.num_classes
  )
  tx = optim.make_optimizer(config.optimizer, config.num_train_steps)
  abstract = train.abstract_train_state(
    model, tx, runs.input_shape(config), mesh, config.sharding.fsdp_min_size
  )
  allocate = jax.jit(
    lambda: jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), abstract),
    out_shardings=sharding.shardings_of(abstract),
  )
  return {
    "compiled": allocate.lower().compile().memory_analysis().output_size_in_bytes,
    "shards": plan.shard_bytes(abstract),
  }


def test_fsdp_over_four_chips_shrinks_deeplabv3_r101_state_memory():
  config = load_config("deeplabv3_cityscapes")  # full width: 60 M parameters
  data_parallel = state_bytes(config, "v5e:2x2", fsdp=1)
  split = state_bytes(config, "v5e:2x2", fsdp=4)
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
  row = plan_table.markdown_row(result)
  assert "**no**" in row and "—%" not in row
  # The compiler's figure for what did not fit, as the table shows it.
  needed = re.search(r"temporaries \(([\d.]+)G\)", result["train"]["compiler_error"])
  assert needed and f"temporaries {float(needed.group(1)):.1f} > " in row


def test_a_near_miss_is_shown_with_two_decimals():
  result = {
    "model": "m",
    "topology": "v5e:4x8",
    "batch_size": 32,
    "reference": "",
    "train": {
      "fits": False,
      "compiler_error": "RESOURCE_EXHAUSTED: Ran out of memory on "
      "HBM, the total memory required for HLO temporaries (15.78G) exceeds "
      "available HBM (15.75G).",
    },
  }
  assert "| temporaries 15.78 > 15.75 | **no** |" in plan_table.markdown_row(result)
  result["train"]["compiler_error"] = result["train"]["compiler_error"].replace("15.78", "23.3")
  assert "| temporaries 23.3 > 15.8 | **no** |" in plan_table.markdown_row(result)
  other = dict(result, topology="v4:2x2x4")
  assert (
    len(plan_table.markdown_table([other, result]).splitlines()) == 2 + 2
  )  # header, rule, 2 rows
  table = plan_table.markdown_table([other, result], topology="v5e:4x8").splitlines()
  assert len(table) == 3 and "| m | v5e:4x8 |" in table[2]


def test_bad_topologies_and_batches_are_named():
  with pytest.raises(plan.PlanError, match="Unknown topology 'v9:2x2'"):
    plan.plan(_small_config(), "v9:2x2")
  with pytest.raises(plan.PlanError, match="--batch_size=6 does not divide over 4 devices"):
    plan.plan(_small_config(), "v5e:2x2", batch_size=6)
  assert plan.plan_batch_size(_small_config(), 32, None) == (
    32,
    "recipe batch 8 raised to 32 (1 per device); scale the learning rate with it",
  )


@pytest.mark.slow
def test_plan_main_writes_json(tmp_path):
  config = tmp_path / "small.py"
  config.write_text(
    "import sys\nsys.path.insert(0, %r)\nfrom test_plan import _small_config\n\n"
    "def get_config():\n  return _small_config()\n" % os.path.join(ROOT, "tests")
  )
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "experiments", "plan.py"),
      f"--config={config}",
      "--topology=v5e:2x2",
      "--no_eval",
      f"--output={tmp_path}",
    ],
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "PYTHONPATH": ROOT},
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| small | v5e:2x2 | 8 |" in result.stdout
  assert "TPU_WORKER_HOSTNAMES" not in result.stdout + result.stderr  # libtpu's host errors
  # Its stages as they start and end, with the seconds since the start.
  stages = re.findall(r"^\[ *(\d+) s\] (.*)$", result.stdout, re.M)
  assert [text for _, text in stages][::2] == [
    "compiling the train step: batch 8 over 4 TPU v5e devices",
    "measuring the recipe's decoding and augmentation on this CPU",
  ]
  assert len(stages) == 3 and re.fullmatch(r"train step compiled in \d+ s: fits", stages[1][1])
  assert [int(t) for t, _ in stages] == sorted(int(t) for t, _ in stages)
  written = json.load(open(tmp_path / "plan_small_v5e_2x2.json"))
  assert written["train"]["fits"] and "eval" not in written


@pytest.mark.slow
def test_collectives_are_read_from_the_compiled_program_and_the_model_matches_them():
  hlo = (
    "%a = (f32[4]{0}, f32[2]{0}) all-reduce(%x, %y), replica_groups={{0,1,2,3},{4,5,6,7}}\n"
    "%b = bf16[8,2]{1,0} all-gather(%z), replica_groups=[2,4]<=[8], dimensions={0}\n"
    "%c = f32[3]{0} reduce-scatter(%w), replica_groups=mesh['axis_0'=2,'axis_1'=4] "
    "{'axis_1'}, dimensions={0}\n"
  )
  # all-reduce: 2 x 3/4 x 24 bytes; all-gather: 3/4 x 32; reduce-scatter: (4 - 1) x 12 bytes.
  assert plan.compiled_collectives(hlo, 8) == {
    "all-reduce": 36.0,
    "all-gather": 24.0,
    "reduce-scatter": 36.0,
  }
  config = _small_config()
  config.model.update(dict(features=8, depth=3))
  result = plan.plan(config, "v5e:4x4", with_eval=False, with_input=False)
  ici = result["ici"]
  # Data parallelism: the gradient all-reduce of every float32 parameter over 16 devices, as
  # the compiler emits it (plus batch-norm statistics and the metric sums: under 2%).
  expected = 2 * 15 / 16 * 4 * result["parameters"]
  assert ici["model"]["gradient_allreduce"] == pytest.approx(expected)
  assert set(ici["compiled"]) == {"all-reduce"}
  assert expected <= ici["compiled"]["all-reduce"] <= 1.02 * expected
  assert ici["seconds"] == pytest.approx(ici["bytes_per_device"] / 200e9)  # v5e: 51.2 TB/s / 256
  # Without compiling, refresh() gives the model's figure and the same compute and HBM times.
  again = plan.refresh(json.loads(json.dumps(result)), config)
  assert again["ici"]["bytes_per_device"] == pytest.approx(expected)
  for key in ("compute_seconds", "hbm_seconds"):
    assert again["train"][key] == pytest.approx(result["train"][key])
  config.sharding.update(dict(fsdp=4, fsdp_min_size=0))
  split = plan.plan(config, "v5e:4x4", with_eval=False, with_input=False)
  assert split["ici"]["compiled"]["all-gather"] > 0  # parameters gathered within fsdp groups
  with pytest.raises(plan.PlanError, match="fsdp=4 .* plan it again"):
    plan.refresh(split, config)


def test_the_step_is_bound_by_the_slowest_of_compute_hbm_ici_and_input():
  result = {
    "batch_size": 32,
    "devices": 32,
    "devices_per_chip": 1,
    "schedule": {"steps": 1000},
    "ici": {"seconds": 0.3},
    "input": {"seconds": 0.5},
    "train": {
      "fits": True,
      "flops_per_device": 2e13,
      "peak_flops_per_device": 1e14,
      "compute_seconds": 0.2,
      "hbm_seconds": 0.4,
    },
  }
  plan.estimate_step(result)
  train_ = result["train"]
  assert train_["bound"] == "input" and train_["step_seconds"] == 0.5
  assert train_["images_per_second"] == 64 and train_["mfu"] == pytest.approx(0.4)
  assert result["schedule"]["hours"] == pytest.approx(1000 * 0.5 / 3600)
  assert "| 200 / 400 / 300 / 500 | 500 (input) |" in plan_table.markdown_row(
    dict(result, model="m", topology="v5e:4x8", reference="")
  )


def test_input_plan_from_the_recipes_pipeline_on_images_of_the_datasets_size():
  from segjax.data import pipeline

  config = _small_config()
  info = pipeline.dataset_info(config.data)
  small = plan.input_rate(config.data, info, (64, 64))
  large = plan.input_rate(config.data, info, (512, 512))
  # A measured rate of the recipe's pipeline at each size (timings are reported, not compared).
  for rate, size in ((small, [64, 64]), (large, [512, 512])):
    assert rate["image_size"] == size and rate["format"] == info.image_format
    assert 0 < rate["examples_per_s_per_core"] < float("inf")
  # v5e:4x8: 8 hosts of 4 chips, 112 vCPUs each; batch 32 is 4 examples per host.
  slice_ = plan.target("v5e:4x8")
  rate = {"examples_per_s_per_core": 10.0}
  planned = plan.input_plan(rate, slice_, 32, compute_seconds=0.02)
  assert planned["host_vcpus"] == 112 and planned["examples_per_host"] == 4
  assert planned["seconds"] == pytest.approx(4 / (112 * 10.0))
  assert planned["cores_needed_per_host"] == pytest.approx(4 / 0.02 / 10.0)


def test_sweep_doubles_the_batch_until_it_does_not_fit_and_keeps_the_fastest(monkeypatch):
  """`plan.sweep`'s search over plans (each `plan.plan` replaced by a stand-in whose memory and
  speed are known): per fsdp, batches 1, 2, 4, ... per device until one does not fit; the best is
  the fastest that fits."""

  def fake_plan(config, topology, *, fsdp, batch_size, with_eval, with_input):
    per_device = batch_size // 4
    fits = per_device * 6 / fsdp <= 16  # GiB of a v5e chip
    images_per_second = batch_size / (0.01 * per_device + 0.02) if fits else None
    return {
      "fsdp": fsdp,
      "batch_per_device": per_device,
      "train": {
        "fits": fits,
        "images_per_second": images_per_second,
        "memory_gib": {"total": per_device * 6 / fsdp, "hbm": 16.0},
      },
    }

  monkeypatch.setattr(plan, "plan", fake_plan)
  messages = []
  result = plan.sweep(_small_config(), "v5e:2x2", fsdp_values=(1, 2, 3), log=messages.append)
  tried = [(r["fsdp"], r["batch_per_device"]) for r in result["plans"]]
  # fsdp 1 fits 2 per device (12 GiB), not 4; fsdp 2 fits 4 (12 GiB), not 8; 3 does not divide 4.
  assert tried == [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4), (2, 8)]
  assert messages[2] == "fsdp 1, batch 4/device: does not fit (24.00 GiB of 16.0)"
  assert (result["best"]["fsdp"], result["best"]["batch_per_device"]) == (2, 4)


def test_the_mesh_follows_the_topology_and_names_the_link_of_each_axis():
  # One v5e:4x8 slice: the mesh is mesh_utils' topology-aware layout (not the reshaped device
  # list), each fsdp group a straight line of neighbouring chips, both axes on the ICI.
  import jax
  import numpy as np
  from jax.experimental import mesh_utils, topologies

  from segjax import sharding

  ids = lambda array: np.vectorize(lambda d: d.id)(array)
  devices = topologies.get_topology_desc(platform="tpu", topology_name="v5e:4x8").devices
  mesh = sharding.make_mesh(devices=devices, fsdp=8)
  np.testing.assert_array_equal(
    ids(mesh.devices), ids(mesh_utils.create_device_mesh((4, 8), devices))
  )
  assert not np.array_equal(ids(mesh.devices), np.arange(32).reshape(4, 8))
  for group in mesh.devices:
    steps = np.abs(np.diff([d.coords for d in group], axis=0)).sum(axis=1)
    assert (steps == 1).all(), [d.coords for d in group]
  assert sharding.axis_links(mesh) == {"data": "ICI", "fsdp": "ICI"}
  # Two v5e:2x4 slices: every fsdp group inside one slice, the data axis across the slices.
  two = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x4", num_slices=2)
  mesh = sharding.make_mesh(devices=two.devices, fsdp=4)
  assert dict(mesh.shape) == {"data": 4, "fsdp": 4}
  assert [len({d.slice_index for d in group}) for group in mesh.devices] == [1] * 4
  assert {d.slice_index for d in mesh.devices[:, 0]} == {0, 1}
  assert sharding.axis_links(mesh) == {"data": "DCN", "fsdp": "ICI"}
  with pytest.raises(ValueError, match=r"fsdp=16 does not divide the 8 devices of a slice"):
    sharding.make_mesh(devices=two.devices, fsdp=16)
  # The CPU devices of this process: their own order, every axis local.
  mesh = sharding.make_mesh(4, fsdp=2)
  np.testing.assert_array_equal(ids(mesh.devices), ids(np.asarray(jax.devices()[:4]).reshape(2, 2)))
  assert sharding.axis_links(mesh) == {"data": "local", "fsdp": "local"}
  assert sharding.axis_links(sharding.make_mesh(4)) == {"data": "local", "fsdp": "none"}
