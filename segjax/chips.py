"""Accelerator chips as their datasheets give them, for plans (`segjax.plan`) and MFU
(`segjax.benchmark`); docs/recipes.md lists the figures with their sources."""

from __future__ import annotations

import dataclasses

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip (datasheets): HBM bytes, dense bf16 FLOP/s, HBM bytes/s, all-reduce
  bytes/s over the interconnect, and the host's vCPUs per chip."""

  name: str
  hbm: float
  peak_flops: float
  bandwidth: float
  ici: float
  host_vcpus: float
  device_kinds: tuple[str, ...] = ()  # how jax.devices()[i].device_kind starts on this chip
  peak_flops_f32: float | None = None  # float32 matmuls (TF32 on NVIDIA); None: peak_flops


# Sources (docs/recipes.md): cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e} (all-reduce bandwidth
# per Pod / chips per Pod, or half the bidirectional ICI bandwidth per chip; vCPUs of a 4-chip
# VM / 4), NVIDIA's A100/H100 datasheets (NVLink, half the bidirectional figure) and the GCE
# machine types a2-ultragpu-8g (96 vCPUs) and a3-highgpu-8g (208 vCPUs).
CHIPS = {
  "v4": Chip("TPU v4", 32 * GiB, 275e12, 1.2e12, 1.1e15 / 4096, 240 / 4, ("TPU v4",)),
  "v5e": Chip(
    "TPU v5e", 16 * GiB, 197e12, 0.819e12, 51.2e12 / 256, 112 / 4, ("TPU v5 lite", "TPU v5e")
  ),
  "v5p": Chip("TPU v5p", 95 * GiB, 459e12, 2.765e12, 1200e9 / 2, 208 / 4, ("TPU v5p", "TPU v5")),
  "v6e": Chip(
    "TPU v6e", 32 * GiB, 918e12, 1.64e12, 102.4e12 / 256, 180 / 4, ("TPU v6 lite", "TPU v6e")
  ),
  "a100": Chip(
    "NVIDIA A100 80GB SXM", 80 * GiB, 312e12, 2.039e12, 600e9 / 2, 96 / 8, ("NVIDIA A100",), 156e12
  ),
  "h100": Chip(
    "NVIDIA H100 80GB SXM", 80 * GiB, 989e12, 3.35e12, 900e9 / 2, 208 / 8, ("NVIDIA H100",), 494e12
  ),
  "h200": Chip(
    "NVIDIA H200 SXM", 141e9, 989e12, 4.8e12, 900e9 / 2, 224 / 8, ("NVIDIA H200",), 494e12
  ),
}

# Device descriptions for compiling for NVIDIA GPUs without one (the CUDA plugin's target config).
GPU_TARGETS = {
  "a100": dict(
    core_count=108,
    fpus_per_core=64,
    memory_bandwidth=2039000000000,
    l2_cache_size=41943040,
    clock_rate_ghz=1.41,
    device_memory_size=85899345920,
    shared_memory_per_core=167936,
    shared_memory_per_block_optin=166912,
    major=8,
    description="NVIDIA A100-SXM4-80GB",
  ),
  "h100": dict(
    core_count=132,
    fpus_per_core=128,
    memory_bandwidth=3352320000000,
    l2_cache_size=52428800,
    clock_rate_ghz=1.98,
    device_memory_size=84929347584,
    shared_memory_per_core=233472,
    shared_memory_per_block_optin=232448,
    major=9,
    description="NVIDIA H100 80GB HBM3",
  ),
  "h200": dict(
    core_count=132,
    fpus_per_core=128,
    memory_bandwidth=4800000000000,
    l2_cache_size=52428800,
    clock_rate_ghz=1.98,
    device_memory_size=150754820096,
    shared_memory_per_core=233472,
    shared_memory_per_block_optin=232448,
    major=9,
    description="NVIDIA H200",
  ),
}


def for_device_kind(device_kind: str) -> Chip | None:
  """The chip whose ``device_kinds`` one of starts ``device_kind`` (``jax.Device.device_kind``)."""
  for chip in CHIPS.values():
    if any(device_kind.startswith(prefix) for prefix in chip.device_kinds):
      return chip
  return None


def gpu_target_config(kind: str) -> str:
  t = GPU_TARGETS[kind]
  return f"""gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: {t['shared_memory_per_core']} threads_per_core_limit: 2048
  core_count: {t['core_count']} fpus_per_core: {t['fpus_per_core']}
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: {t['memory_bandwidth']} l2_cache_size: {t['l2_cache_size']}
  clock_rate_ghz: {t['clock_rate_ghz']} device_memory_size: {t['device_memory_size']}
  shared_memory_per_block_optin: {t['shared_memory_per_block_optin']}
  cuda_compute_capability {{ major: {t['major']} }}
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 7 }}
runtime_version {{ major: 12 minor: 8 patch: 0 }}
device_description_str: "{t['description']}"
"""
