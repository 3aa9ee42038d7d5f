"""Plans a training run for an accelerator slice before it is booked: the trainer's own train step
and evaluation step compiled ahead of time for a TPU topology (or NVIDIA GPUs), on any machine.

``jax.experimental.topologies`` describes a TPU slice (``"v5e:4x8"``: 32 chips on 8 hosts) from
``libtpu`` alone, and the CUDA plugin a GPU node from a device description; ``jax.jit(step).lower(
abstract inputs).compile()`` over a mesh of those devices gives the executable's memory per device
and its FLOP count. Nothing runs and no data is read: the state, the batch and the metric sums are
``jax.ShapeDtypeStruct``s with the shardings training would give them.

The step time is an estimate, the largest of four times per step (the plan names the bound):
* compute: FLOPs / peak FLOP/s per device (datasheet dense bf16);
* HBM: bytes accessed / HBM bandwidth per device (XLA's own ``optimal_seconds`` is reported beside
  this roofline when it is positive);
* ICI: the bytes each device sends for the gradient all-reduce and, with ``fsdp`` > 1, the
  parameter all-gathers (forward and backward) and gradient reduce-scatters, with ring algorithms
  (an all-reduce of b bytes over n devices sends 2 (n - 1) / n x b), over the chip's all-reduce
  bandwidth (`communication`);
* input: the recipe's decoding and ``data.train_pp`` measured on this machine's CPU, one core,
  on images of the dataset's size written as files (`input_rate`), scaled to the host's vCPUs.
Chip figures (`segjax.chips`) are datasheet numbers; docs/recipes.md lists them with their sources.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time

import jax
import jax.numpy as jnp

from segjax import chips
from segjax import evaluation
from segjax import machine
from segjax import models
from segjax import runs
from segjax import sharding
from segjax import train
from segjax.data import pipeline
from segjax.chips import GiB
from segjax.plan_input import input_plan, input_rate


INSTALL_HINT = (
  "Planning needs the TPU compiler (libtpu) for TPU topologies and the CUDA plugin "
  "for GPUs, which segjax does not install by default: pip install -e '.[plan]' "
  "(or 'jax[tpu]' / 'jax-cuda12-plugin jax-cuda12-pjrt' of your jax version)."
)


class PlanError(RuntimeError):
  """A plan cannot be made (no compiler for the target, a bad topology name); says why."""


@dataclasses.dataclass(frozen=True)
class Target:
  """The devices compiled for, the chip, and how many devices share one chip (2 on TPU v4, whose
  two TensorCores the topology lists separately)."""

  name: str
  devices: list
  chip: chips.Chip
  devices_per_chip: int
  hosts: int

  @property
  def device_hbm(self) -> float:
    return self.chip.hbm / self.devices_per_chip

  @property
  def device_peak(self) -> float:
    return self.chip.peak_flops / self.devices_per_chip

  @property
  def device_bandwidth(self) -> float:
    return self.chip.bandwidth / self.devices_per_chip


def target(topology: str) -> Target:
  """``"v5e:4x8"``, ``"v4:2x2x4"``, ``"v5p:2x2x2"``, ``"v6e:2x2"`` (TPU slices) or ``"h100:8"`` /
  ``"a100:8"`` (one node of NVIDIA GPUs)."""
  kind, _, shape = topology.partition(":")
  if kind not in chips.CHIPS or not re.fullmatch(r"\d+(x\d+)*", shape):
    raise PlanError(
      f"Unknown topology {topology!r}: expected e.g. v5e:4x8, v4:2x2x4, v5p:2x2x2, "
      f"v6e:4x8, h100:8 or a100:8 (chips: {sorted(chips.CHIPS)})."
    )
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  # Compiling needs no TPU, so several planning processes (pytest workers) may load libtpu at once;
  # on a machine without one, libtpu is told it runs alone (else it prints its host errors).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  if not machine.accelerator_present():
    for key, value in (
      ("TPU_SKIP_MDS_QUERY", "1"),
      ("TPU_WORKER_HOSTNAMES", "localhost"),
      ("TPU_ACCELERATOR_TYPE", "v5litepod-8"),
    ):
      os.environ.setdefault(key, value)
  try:
    if kind in chips.GPU_TARGETS:
      description = topologies.get_topology_desc(
        "gpu", "cuda", target_config=chips.gpu_target_config(kind), topology=f"1x1x{int(shape)}"
      )
    else:
      description = topologies.get_topology_desc(platform="tpu", topology_name=topology)
  except Exception as e:  # the TPU/GPU compiler is missing or refuses the topology
    message = str(e).lower()
    if (
      "unknown backend" in message
      or "not found" in message
      or "not installed" in message
      or isinstance(e, ImportError)
    ):
      raise PlanError(f"No compiler for {topology}: {INSTALL_HINT}") from e
    raise PlanError(f"Cannot describe topology {topology!r}: {e}") from e
  devices = list(description.devices)
  count = math.prod(int(n) for n in shape.split("x"))
  hosts = len({getattr(d, "process_index", 0) for d in devices})
  return Target(topology, devices, chips.CHIPS[kind], max(1, len(devices) // count), hosts)


def _with_sharding(tree, shardings):
  return jax.tree_util.tree_map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
  )


def _sharded_batch(batch: dict, mesh) -> dict:
  rows = sharding.batch_sharded(mesh)
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=rows) for k, v in batch.items()}


def shard_bytes(tree) -> int:
  """Bytes per device of a tree of `jax.ShapeDtypeStruct` with shardings (the largest shard)."""
  total = 0
  for x in jax.tree_util.tree_leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += math.prod(shape) * jnp.dtype(x.dtype).itemsize
  return total


def plan_batch_size(config, devices: int, batch_size: int | None) -> tuple[int, str]:
  """The global batch planned: ``batch_size`` if given, else the recipe's, raised to a multiple of
  the device count (data parallelism needs at least one example per device)."""
  if batch_size:
    if batch_size % devices:
      raise PlanError(f"--batch_size={batch_size} does not divide over {devices} devices.")
    return batch_size, ""
  recipe = config.batch_size
  planned = math.ceil(recipe / devices) * devices
  note = (
    f"recipe batch {recipe} raised to {planned} ({planned // devices} per device); scale "
    "the learning rate with it"
    if planned != recipe
    else ""
  )
  return planned, note


def _compile(fn, *args):
  """``(lowered, compiled, seconds, error)``: a compiler out-of-memory is a result (does not fit),
  not an exception."""
  start = time.perf_counter()
  lowered = fn.lower(*args)
  try:
    compiled = lowered.compile()
  except Exception as e:  # XlaRuntimeError: RESOURCE_EXHAUSTED when the program cannot fit
    message = str(e)
    if "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower():
      return lowered, None, time.perf_counter() - start, message.strip().splitlines()[0][:500]
    raise
  return lowered, compiled, time.perf_counter() - start, None


def _cost(analysis) -> dict:
  if isinstance(analysis, list):
    analysis = analysis[0] if analysis else {}
  return dict(analysis or {})


def _program(
  lowered, compiled, seconds, error, target_: Target, images: int, state_bytes: int
) -> dict:
  """Memory, FLOPs and the time estimate of one compiled step, per device."""
  if compiled is None:
    return {"fits": False, "compile_s": seconds, "compiler_error": error}
  memory = compiled.memory_analysis()
  total = (
    memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    - memory.alias_size_in_bytes
    + memory.temp_size_in_bytes
  )
  cost = _cost(compiled.cost_analysis())
  if not cost.get("flops"):  # the GPU compiler reports none: XLA's count on the lowered program
    cost = _cost(lowered.cost_analysis())
    cost = {
      k: v / len(target_.devices) for k, v in cost.items() if k in ("flops", "bytes accessed")
    }
  flops = float(cost.get("flops", 0.0))
  accessed = float(cost.get("bytes accessed", 0.0))
  compute, hbm = flops / target_.device_peak, accessed / target_.device_bandwidth
  xla_seconds = float(cost.get("optimal_seconds", -1.0))
  step = max(compute, hbm) if max(compute, hbm) > 0 else None
  return {
    "fits": total <= target_.device_hbm,
    "compile_s": seconds,
    "memory_gib": {
      "state": state_bytes / GiB,
      "arguments": memory.argument_size_in_bytes / GiB,
      "outputs_not_aliased": (memory.output_size_in_bytes - memory.alias_size_in_bytes) / GiB,
      "temporaries": memory.temp_size_in_bytes / GiB,
      "total": total / GiB,
      "hbm": target_.device_hbm / GiB,
    },
    "flops_per_device": flops,
    "bytes_accessed_per_device": accessed,
    "peak_flops_per_device": target_.device_peak,
    "compute_seconds": compute,
    "hbm_seconds": hbm,
    "step_seconds": step,
    "bound": ("compute" if compute >= hbm else "HBM") if step else None,
    "xla_optimal_seconds": xla_seconds if xla_seconds > 0 else None,
    "images_per_second": images / step if step else None,
    "mfu": flops / (step * target_.device_peak) if step else None,
  }


def communication(state, mesh, target_: Target, compiled=None) -> dict:
  """Bytes each device sends over the interconnect per train step, and their time over the chip's
  all-reduce bandwidth (per device). Gradients are float32, like the parameters: a replicated
  array of b bytes is all-reduced over all n devices (2 (n - 1) / n x b sent); an array split
  over the ``fsdp`` axis (f devices; d = n / f data groups) is all-gathered in the forward and
  again in the backward pass (2 (f - 1) / f x b), its gradient reduce-scattered ((f - 1) / f x b)
  and its shard all-reduced over the data groups (2 (d - 1) / d x b / f). Batch-norm statistics
  and the metric sums are left out (a few kB). With the ``compiled`` train step, the bytes are
  its own collectives' (`compiled_collectives`), which this model of the ideal schedule gives
  exactly for data parallelism (tests/test_plan.py)."""
  n = mesh.devices.size
  f = mesh.shape.get(sharding.FSDP_AXIS, 1)
  d = n // f
  allreduce = gather = scatter = 0.0
  for x in jax.tree_util.tree_leaves(state.params):
    size = math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
    split = x.sharding is not None and tuple(x.sharding.shard_shape(x.shape)) != tuple(x.shape)
    if split:
      gather += 2 * (f - 1) / f * size
      scatter += (f - 1) / f * size
      allreduce += 2 * (d - 1) / d * size / f
    else:
      allreduce += 2 * (n - 1) / n * size
  bandwidth = target_.chip.ici / target_.devices_per_chip
  out = {
    "model": {
      "gradient_allreduce": allreduce,
      "fsdp_allgather": gather,
      "fsdp_reduce_scatter": scatter,
    },
    "bandwidth_per_device": bandwidth,
  }
  if compiled is not None:
    out["compiled"] = compiled_collectives(compiled.as_text(), n)
  out["bytes_per_device"] = sum((out.get("compiled") or out["model"]).values())
  out["seconds"] = out["bytes_per_device"] / bandwidth
  return out


_COLLECTIVE = re.compile(
  r"= (.*?) (all-reduce|all-gather|reduce-scatter|all-to-all|"
  r"collective-permute)(?:-start)?\((.*)"
)
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")


def _group_size(attributes: str, devices: int) -> int:
  """Devices per replica group of a collective: ``mesh[...] {'axis_0', ...}`` (the named axes'
  sizes multiplied), ``{{0,1,2,3},...}`` or ``[groups,size]<=[n]``; all devices otherwise."""
  named = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attributes)
  if named:
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", named.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", named.group(2)))
  listed = re.search(r"replica_groups=\{\{([\d,]*)\}", attributes)
  if listed:
    return len(listed.group(1).split(","))
  iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attributes)
  return int(iota.group(2)) if iota else devices


def compiled_collectives(hlo_text: str, devices: int) -> dict:
  """Bytes each device sends per step for the collectives of a compiled program (its HLO text),
  by kind, with ring algorithms over each op's replica group of n devices: all-reduce
  2 (n - 1) / n x its bytes, all-gather and all-to-all (n - 1) / n x the output, reduce-scatter
  (n - 1) x the output (its input is n outputs), collective-permute its bytes."""
  sent = {}
  for match in _COLLECTIVE.finditer(hlo_text):
    shape, kind, attributes = match.groups()
    size = sum(
      _BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",") if d)
      for dtype, dims in _ARRAY.findall(shape)
    )
    n = _group_size(attributes, devices)
    factor = {
      "all-reduce": 2 * (n - 1) / n,
      "all-gather": (n - 1) / n,
      "all-to-all": (n - 1) / n,
      "reduce-scatter": n - 1,
      "collective-permute": 1.0,
    }[kind]
    sent[kind] = sent.get(kind, 0.0) + factor * size
  return sent


_BYTES = {
  "pred": 1,
  "s8": 1,
  "u8": 1,
  "s16": 2,
  "u16": 2,
  "f16": 2,
  "bf16": 2,
  "s32": 4,
  "u32": 4,
  "f32": 4,
  "s64": 8,
  "u64": 8,
  "f64": 8,
}


def add_communication_and_input(
  result: dict,
  config,
  state,
  mesh,
  target_: Target,
  info,
  *,
  compiled=None,
  input_size=None,
  with_input: bool = True,
) -> None:
  """Adds ``result["ici"]`` (`communication`) and ``result["input"]`` (`input_rate`, `input_plan`)
  to a plan and re-estimates its train step (`estimate_step`)."""
  result["ici"] = communication(state, mesh, target_, compiled)
  if with_input:
    size = tuple(input_size or info.plan_size or tuple(config.data.crop_size))
    devices_seconds = max(result["train"].get("step_seconds") or 0.0, result["ici"]["seconds"])
    result["input"] = input_plan(
      input_rate(config.data, info, size), target_, result["batch_size"], devices_seconds or None
    )
  estimate_step(result)


def refresh(result: dict, config, *, input_size=None) -> dict:
  """``result`` (a plan as written by experiments/plan.py) with its communication and input parts
  made again on this machine, the compiled figures kept: no compilation, so the interconnect is
  the model's (exact for data parallelism; a plan with ``fsdp`` > 1 must be compiled again)."""
  if result["fsdp"] > 1:
    raise PlanError(
      f"{result.get('config')}: a plan with fsdp={result['fsdp']} takes its "
      "interconnect bytes from the compiled program: plan it again."
    )
  target_ = target(result["topology"])
  mesh = sharding.make_mesh(devices=target_.devices, fsdp=result["fsdp"])
  info = pipeline.dataset_info(config.data)
  model, tx, _, _ = train.parts(config, info.descriptor)
  min_size = config.get("sharding", {}).get("fsdp_min_size", 2**12)
  state = train.abstract_train_state(model, tx, runs.input_shape(config), mesh, min_size)
  train_ = result["train"]
  if train_.get("flops_per_device"):
    train_.update(
      peak_flops_per_device=target_.device_peak,
      compute_seconds=train_["flops_per_device"] / target_.device_peak,
      hbm_seconds=train_["bytes_accessed_per_device"] / target_.device_bandwidth,
    )
    train_["step_seconds"] = max(train_["compute_seconds"], train_["hbm_seconds"])
    train_["mfu"] = train_["compute_seconds"] / train_["step_seconds"]
  add_communication_and_input(result, config, state, mesh, target_, info, input_size=input_size)
  return result


def estimate_step(result: dict) -> None:
  """Sets ``result["train"]``'s step time to the largest of its compute, HBM, ICI and input times,
  names the bound, and updates images/s, MFU and the schedule's hours."""
  train_ = result["train"]
  if not train_.get("flops_per_device"):
    return
  times = {
    "compute": train_["compute_seconds"],
    "HBM": train_["hbm_seconds"],
    "ICI": (result.get("ici") or {}).get("seconds", 0.0),
    "input": (result.get("input") or {}).get("seconds", 0.0),
  }
  bound = max(times, key=times.get)
  step = times[bound]
  train_.update(
    step_seconds=step,
    bound=bound,
    images_per_second=result["batch_size"] / step,
    mfu=train_["flops_per_device"] / (step * train_["peak_flops_per_device"]),
  )
  if result.get("schedule"):
    steps = result["schedule"]["steps"]
    hours = steps * step / 3600
    result["schedule"].update(
      hours=hours, chip_hours=hours * result["devices"] / result["devices_per_chip"]
    )


def plan(
  config,
  topology: str,
  *,
  fsdp: int | None = None,
  batch_size: int | None = None,
  eval_batch_size: int | None = None,
  eval_size=None,
  with_eval: bool = True,
  input_size=None,
  with_input: bool = True,
  log=lambda message: None,
) -> dict:
  """The plan of ``config`` on ``topology`` (see the module docstring), JSON-ready; ``log`` gets a
  line as each stage starts and ends (compiling a large recipe takes minutes); the input is
  planned on images of ``input_size`` (default: the dataset's, `segjax.data.pipeline.DataInfo`
  ``plan_size``, or the training crop)."""
  target_ = target(topology)
  fsdp = fsdp or config.get("sharding", {}).get("fsdp", 1)
  if len(target_.devices) % fsdp:
    raise PlanError(f"--fsdp={fsdp} does not divide the {len(target_.devices)} devices.")
  mesh = sharding.make_mesh(devices=target_.devices, fsdp=fsdp)
  devices = len(target_.devices)
  info = pipeline.dataset_info(config.data)
  descriptor = info.descriptor
  model, tx, objective, metric_terms = train.parts(config, descriptor)
  min_size = config.get("sharding", {}).get("fsdp_min_size", 2**12)
  state = train.abstract_train_state(model, tx, runs.input_shape(config), mesh, min_size)
  batch_size, note = plan_batch_size(config, devices, batch_size)
  batch = pipeline.abstract_train_batch(config.data, info, batch_size)
  sums = jax.eval_shape(
    lambda: train.zero_sums(model, objective, metric_terms, state.variables, batch)
  )
  sums = _with_sharding(sums, jax.tree_util.tree_map(lambda _: sharding.replicated(mesh), sums))
  step = train.make_train_step(
    model,
    tx,
    objective,
    metric_terms,
    mesh,
    config.seed,
    state_sharding=sharding.shardings_of(state),
  )
  state_bytes = shard_bytes(state)
  result = {
    "topology": topology,
    "chip": target_.chip.name,
    "devices": devices,
    "devices_per_chip": target_.devices_per_chip,
    "hosts": target_.hosts,
    "fsdp": fsdp,
    # the mesh (sharding.make_mesh: by the topology) and the link each axis's collectives cross
    "mesh": {
      "shape": dict(mesh.shape),
      "links": sharding.axis_links(mesh),
    },
    "model": config.model.name,
    "dataset": descriptor.name,
    "reference": config.get("reference", ""),
    "crop_size": list(config.data.crop_size),
    "dtype": config.model.get("dtype", "float32"),
    "batch_size": batch_size,
    "batch_per_device": batch_size // devices,
    "recipe_batch_size": config.batch_size,
    "note": note,
    "parameters": models.count_params(state.params),
  }
  log(f"compiling the train step: batch {batch_size} over {devices} {target_.chip.name} devices")
  compiled = _compile(step, state, sums, _sharded_batch(batch, mesh))
  result["train"] = _program(*compiled, target_, batch_size, state_bytes)
  log(
    f"train step compiled in {compiled[2]:.0f} s: "
    f"{'fits' if result['train']['fits'] else 'does not fit'}"
  )
  train_step = result["train"]
  if train_step.get("step_seconds"):
    # The recipe's schedule in images: steps x its batch, at the planned batch.
    steps = config.num_train_steps * config.batch_size / batch_size
    hours = steps * train_step["step_seconds"] / 3600
    result["schedule"] = {
      "steps": steps,
      "hours": hours,
      "chip_hours": hours * devices / target_.devices_per_chip,
    }
  if with_input:
    log("measuring the recipe's decoding and augmentation on this CPU")
  add_communication_and_input(
    result,
    config,
    state,
    mesh,
    target_,
    info,
    compiled=compiled[1],
    input_size=input_size,
    with_input=with_input,
  )
  if with_eval:
    log("compiling the evaluation step")
    result["eval"] = _plan_eval(
      config, model, info, mesh, target_, state, eval_batch_size, eval_size
    )
    log("evaluation step compiled")
  return result


def _plan_eval(config, model, info, mesh, target_, state, eval_batch_size, eval_size) -> dict:
  devices = mesh.devices.size
  global_batch = math.ceil((eval_batch_size or config.eval_batch_size) / devices) * devices
  evaluator = evaluation.Evaluator(
    model, config, info.descriptor, mesh, runs.input_shape(config), panoptic_labels=info.instances
  )
  batch = pipeline.abstract_eval_batch(config.data, info, global_batch, eval_size)
  batch = _sharded_batch({k: batch[k] for k in evaluator.batch_keys()}, mesh)
  variables = _with_sharding(
    jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.variables),
    sharding.shardings_of(state.variables),
  )
  sums = jax.eval_shape(evaluator.zero_sums)
  sums = _with_sharding(sums, jax.tree_util.tree_map(lambda _: sharding.replicated(mesh), sums))
  if evaluator.fused:
    compiled = _compile(evaluator.step, variables, sums, batch)
  else:  # the compiled part: forward pass and jit post-processing (host steps follow on CPU)
    compiled = _compile(evaluator.predict, variables, batch["image"])
  out = _program(*compiled, target_, global_batch, shard_bytes(variables))
  out.update(
    batch_size=global_batch,
    image_size=list(batch["image"].shape[1:3]),
    host_postprocess=[s.spec for s in evaluator.chain.host],
  )
  return out


def _gib(program: dict) -> str:
  memory = program.get("memory_gib")
  return f"{memory['total']:.2f}" if memory else "?"


def sweep(
  config,
  topology: str,
  *,
  fsdp_values=(1, 2, 4, 8),
  max_per_device: int = 64,
  with_eval: bool = False,
  log=print,
) -> dict:
  """Batch per device (1, 2, 4, ...) × ``fsdp``: for each fsdp, the largest batch that fits
  (compiling until one does not); returns every plan made and the best (most images/s)."""
  devices = len(target(topology).devices)
  tried, best = [], None
  for fsdp in [f for f in fsdp_values if devices % f == 0]:
    per_device = 1
    while per_device <= max_per_device:
      result = plan(
        config,
        topology,
        fsdp=fsdp,
        batch_size=per_device * devices,
        with_eval=with_eval,
        with_input=False,
      )
      tried.append(result)
      fits = result["train"]["fits"]
      log(
        f"fsdp {fsdp}, batch {per_device}/device: "
        f"{'fits' if fits else 'does not fit'} "
        f"({_gib(result['train'])} GiB of {result['train'].get('memory_gib', {}).get('hbm', 0):.1f})"
      )
      if not fits:
        break
      if best is None or (result["train"]["images_per_second"] or 0) > (
        best["train"]["images_per_second"] or 0
      ):
        best = result
      per_device *= 2
  return {"plans": tried, "best": best}
