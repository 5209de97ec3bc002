"""The suite's results file: the markdown tables of a results dict (`benchmarks.suites.rates`), and the
hand-written findings kept at its end when the file is regenerated."""
from __future__ import annotations

from benchmarks.harness.rate_row import HEADER, fmt as _fmt


def render(out: dict) -> str:
    """The results file's text (without the kept findings); out["main"] holds RateRows."""
    lines = ["# cocoa-jax benchmark results", ""]
    env = out["env"]
    lines += [f"- date: {env['date']}", f"- machine: {env['machine']}", f"- versions: {env['versions']}",
              f"- cocoa-jax devices: {env['devices']}; torch threads: {env['torch_threads']}",
              f"- command: `{env['command']}` (total {out.get('total_s', 0):.0f} s; per section: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in out.get("section_s", {}).items()) + ")",
              f"- matmul peak ({out['peak']['n']}^2 float32), GFLOP/s: XLA {out['peak']['xla']:.1f}, "
              f"torch {out['peak']['torch']:.1f}, numpy {out['peak']['numpy']:.1f} at the start; "
              + (f"XLA {out['peak_end']['xla']:.1f}, torch {out['peak_end']['torch']:.1f}, numpy "
                 f"{out['peak_end']['numpy']:.1f} at the end; " if "peak_end" in out else "")
              + f"peak used = {out['peak']['peak']:.1f} (the best figure)",
              ""]
    if env.get("notes"):
        lines += [f"- note: {n}" for n in env["notes"]] + [""]
    lines += ["Units: a mask / evaluation = one masked forward pass (all K targets read from it); a gradient step = "
              "one path point or sample with the gradients of all K targets. Ratio = cocoa-jax / best PyTorch layout. "
              "Roofline = XLA cost-analysis FLOPs per unit x rate / matmul peak. E = explicands per call "
              "(E=1: perturbations sharded over devices; E>1: explicands sharded).", ""]
    if out.get("main"):
        lines += ["## Rates vs PyTorch", "", *HEADER.split("\n")]
        lines += [r.line() for r in out["main"]]  # RateRows
        lines.append("")
    if out.get("batch"):
        lines += ["## Scaling: RISE batch size (E=1, K=1)", "", "| model | batch | devices | masks/s | roofline | "
                  "XLA memory MiB |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['devices']} | {r['rate']:.1f} | {r['roofline']:.0%} | "
                  f"{_fmt(r['mem_mib'], 0)} |" for r in out["batch"]] + [""]
    if out.get("devices"):
        lines += ["## Scaling: forced host devices (subprocesses)", "",
                  "| devices | RISE masks/s (E=1) | roofline | IG steps/s (E=1) | roofline | RISE masks/s (E>1) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['devices']} | {r['rise']:.1f} | {r['rise_roofline']:.0%} | {r['ig']:.1f} | "
                  f"{r['ig_roofline']:.0%} | {r['rise_batch']:.1f} |" for r in out["devices"]] + [""]
    if out.get("bf16"):
        lines += ["## bf16 vs float32 (E=1, K=1)", "",
                  "| dtype | method | rate | rel. L2 error vs float32 | rank correlation vs float32 | XLA memory MiB |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['method']} | {r['rate']:.1f} | {r['rel_err']:.2e} | {r['spearman']:.4f} | "
                  f"{_fmt(r['mem_mib'], 0)} |" for r in out["bf16"]] + [""]
    if out.get("steps"):
        lines += ["## IG quadrature: steps vs accuracy (reference: Gauss-Legendre, many steps)", "",
                  "| rule | steps | rel. L2 error | completeness gap / abs(f(x) - f(b)) |", "|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['steps']} | {r['rel_err']:.2e} | {r['completeness']:.2e} |"
                  for r in out["steps"]] + [""]
    if out.get("e2e"):
        r = out["e2e"]
        lines += ["## End to end: the paper's protocol on one explicand batch", "",
                  f"{r['explicands']} explicands ({r['model']}), K={r['targets']} targets, IG + GradientSHAP + RISE, "
                  "then insertion and deletion of every attribution. Official way: one explicand at a time, each "
                  "target separately, Captum/batched RISE, default layout.", "",
                  "| cocoa-jax s | cocoa-jax first call (incl. compile) s | official way s | speed-up |",
                  "|---|---|---|---|",
                  f"| {r['jax_s']:.1f} | {r['jax_first_call_s']:.1f} | {r['official_s']:.1f} | {r['speedup']:.1f}x |", ""]
    lines += [f"Peak resident memory of the benchmark process: {out.get('max_rss_mib', 0):.0f} MiB.", ""]
    return "\n".join(lines)


FINDINGS_MARKER = "<!-- findings: written by hand, kept when this file is regenerated -->"


def kept_findings(path: str) -> str:
    """The hand-written findings at the end of an existing results file (from the marker on)."""
    try:
        with open(path) as fh:
            old = fh.read()
    except OSError:
        return ""
    at = old.find(FINDINGS_MARKER)
    return "" if at < 0 else "\n" + old[at:]
