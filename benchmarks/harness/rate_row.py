"""One row of the main table: a method's rate on one model, cocoa-jax vs PyTorch (frozen)."""
from __future__ import annotations

import dataclasses
import math

from benchmarks.harness.roofline import fraction

UNIT = {"rise": "masks/s", "integrated_gradients": "steps/s", "gradient_shap": "steps/s", "insdel": "evals/s"}

HEADER = ("| model | method | K | E | cocoa-jax | PyTorch NCHW | PyTorch channels-last | ratio (best) | "
          "ratio (NCHW) | GFLOP/unit | roofline cocoa-jax | roofline PyTorch | XLA memory MiB | compile s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def fmt(v, digits=1):
    """A table cell: floats to `digits` places, nan as '-'."""
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


@dataclasses.dataclass(frozen=True)
class RateRow:
    """Rates in units/s (`unit`); ratios cocoa-jax / PyTorch; rooflines as fractions of the peak.
    torch_cl is nan where the model has no layout choice. Field names are the JSON keys."""

    model: str
    method: str
    K: int
    E: int
    unit: str
    jax: float
    torch_nchw: float
    torch_cl: float
    ratio_best: float
    ratio_nchw: float
    unit_gflop: float
    roofline_jax: float
    roofline_torch: float
    compile_s: float
    mem_mib: float
    wall_s: float

    @classmethod
    def measured(cls, model: str, method: str, k: int, e: int, jax_result: dict, torch_results: dict,
                 unit_flops: float, peak_gflops: float, wall_s: float) -> "RateRow":
        """From `jax_measure`'s result and `torch_measure`'s per layout ({channels_last: result})."""
        best = max(v["rate"] for v in torch_results.values())
        nchw = torch_results[False]["rate"]
        return cls(model=model, method=method, K=k, E=e, unit=UNIT[method], jax=jax_result["rate"], torch_nchw=nchw,
                   torch_cl=torch_results[True]["rate"] if True in torch_results else float("nan"),
                   ratio_best=jax_result["rate"] / best, ratio_nchw=jax_result["rate"] / nchw,
                   unit_gflop=unit_flops / 1e9, roofline_jax=fraction(unit_flops, jax_result["rate"], peak_gflops),
                   roofline_torch=fraction(unit_flops, best, peak_gflops), compile_s=jax_result["compile_s"],
                   mem_mib=jax_result["mem_mib"], wall_s=wall_s)

    def with_peak_scaled(self, scale: float) -> "RateRow":
        """The same row against a peak 1/scale times the one it was computed with."""
        return dataclasses.replace(self, roofline_jax=self.roofline_jax * scale,
                                   roofline_torch=self.roofline_torch * scale)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def line(self) -> str:
        """The row in the markdown table under `HEADER`."""
        return (f"| {self.model} | {self.method} | {self.K} | {self.E} | {self.jax:.2f} {self.unit} | "
                f"{self.torch_nchw:.2f} | {fmt(self.torch_cl, 2)} | {self.ratio_best:.2f} | "
                f"{self.ratio_nchw:.2f} | {self.unit_gflop:.2f} | {self.roofline_jax:.0%} | "
                f"{self.roofline_torch:.0%} | {fmt(self.mem_mib, 0)} | {self.compile_s:.1f} |")

    def progress(self) -> str:
        """The line printed while the suite runs."""
        return (f"  {self.model:15s} {self.method:13s} K={self.K} E={self.E}: cocoa-jax {self.jax:8.2f} {self.unit}, "
                f"torch {self.torch_nchw:8.2f} / cl {self.torch_cl:8.2f}, ratio {self.ratio_best:.2f}, "
                f"roofline {self.roofline_jax:.0%} ({self.wall_s:.0f}s)")
