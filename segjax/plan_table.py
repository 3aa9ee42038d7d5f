"""The recipe × slice Markdown table of plans (README, docs/recipes.md)."""

from __future__ import annotations

import re


def markdown_row(result: dict) -> str:
  """One row of the recipe × slice table: per-device GiB, fits, step ms, images/s, MFU, hours
  and chip-hours for the schedule, the evaluation step's GiB and ms, the published number."""
  t, e = result["train"], result.get("eval") or {}
  memory = t.get("memory_gib", {})
  number = lambda value, fmt: format(value, fmt) if value is not None else "—"
  gib = f"{memory['total']:.1f} / {memory['hbm']:.0f}" if memory else "—"
  needed = re.search(
    r"temporaries \(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)", t.get("compiler_error", "")
  )
  if needed:  # the compiler's own figure for what did not fit
    want, have = float(needed.group(1)), float(needed.group(2))
    digits = 1 if round(want, 1) > round(have, 1) else 2  # 15.78 > 15.75, not 15.8 > 15.8
    gib = f"temporaries {want:.{digits}f} > {have:.{digits}f}"
  schedule = result.get("schedule") or {}
  evaluation = (
    f"{e['memory_gib']['total']:.1f} GiB, {1e3 * e['step_seconds']:.0f} ms"
    if e.get("memory_gib") and e.get("step_seconds")
    else ("does not fit" if e and not e.get("fits") else "—")
  )
  parts = [
    t.get("compute_seconds"),
    t.get("hbm_seconds"),
    (result.get("ici") or {}).get("seconds"),
    (result.get("input") or {}).get("seconds"),
  ]
  parts = " / ".join(_ms(v) for v in parts) if t.get("flops_per_device") else "—"
  return (
    f"| {result.get('config', result['model'])} | {result['topology']} | "
    f"{result['batch_size']} | {gib} | {'yes' if t['fits'] else '**no**'} | {parts} | "
    f"{number(t.get('step_seconds') and 1e3 * t['step_seconds'], ',.0f')}"
    f"{' (' + t['bound'] + ')' if t.get('bound') else ''} | "
    f"{number(t.get('images_per_second'), ',.0f')} | "
    f"{_percent(t.get('mfu'))} | "
    f"{_hours(schedule.get('hours'))} | {number(schedule.get('chip_hours'), ',.0f')} | "
    f"{evaluation} | {result.get('reference', '')} |"
  )


def _ms(seconds) -> str:
  """Milliseconds, two significant digits below 10 (``0.41``, ``3.2``, ``1,243``)."""
  if seconds is None:
    return "—"
  ms = 1e3 * seconds
  return f"{ms:,.0f}" if ms >= 10 else f"{ms:.2g}"


def _percent(fraction) -> str:
  """MFU as a percentage: whole percents, two significant digits below 1% (``0.083%``)."""
  if not fraction:
    return "—"
  return f"{100 * fraction:.0f}%" if fraction >= 0.01 else f"{100 * fraction:.2g}%"


def _hours(hours) -> str:
  """Two significant digits, whole hours from 100 on (``0.23``, ``4.7``, ``557``)."""
  if hours is None:
    return "—"
  return f"{hours:,.0f}" if hours >= 100 else f"{hours:.2g}"


def markdown_table(results, topology: str | None = None) -> str:
  """The recipe × slice table of several plans (as written by experiments/plan.py); with
  ``topology``, the rows of that slice only."""
  rows = sorted(
    (r for r in results if topology in (None, r["topology"])),
    key=lambda r: (r.get("config", r["model"]), r["topology"]),
  )
  return "\n".join([MARKDOWN_HEADER] + [markdown_row(r) for r in rows])


MARKDOWN_HEADER = (
  "| recipe | slice | batch | GiB per device (of HBM) | fits | ms compute / HBM / "
  "ICI / input | step ms (bound) | images/s | MFU | hours | chip-hours | "
  "eval step (per device) | published |\n"
  "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|"
)
