"""System-level figures and side-by-side comparison, computed only from the hardware catalog.

`summarize` turns a loaded `System` into whole-system totals (compute, HBM, bandwidths,
power, price); `compare_systems` divides the first system's figures by the second's, the way the
CloudMatrix384 vs GB200 NVL72 comparisons are quoted ("1.7x compute, 3.6x memory, ...").
Pure functions of the specs: no I/O, no formatting. Units are SI (FLOP/s, bytes, W, US$).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cloudmatrix.specs.hardware import System


@dataclass(frozen=True)
class SystemSummary:
    name: str
    chip: str
    nodes: int
    chips: int
    dies: int
    precision: str
    peak_flops: float  # dense, whole system, at `precision`
    hbm_capacity: float  # bytes
    hbm_bandwidth: float  # bytes/s
    scale_up: str
    scale_up_domain_chips: int
    scale_up_bandwidth: float  # bytes/s one-way, summed over all chips
    scale_out: str
    scale_out_bandwidth: float  # bytes/s one-way, summed over all chips
    power: float  # W, whole system at load
    price_usd: float

    @property
    def flops_per_watt(self) -> float:
        return self.peak_flops / self.power

    @property
    def usd_per_pflops(self) -> float:
        return self.price_usd / (self.peak_flops / 1e15)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["flops_per_watt"] = self.flops_per_watt
        d["usd_per_pflops"] = self.usd_per_pflops
        return d


def summarize(system: System, precision: str = "bf16") -> SystemSummary:
    """Whole-system totals of `system`; raises CloudMatrixError if its chip lacks `precision`."""
    chip, spec = system.chip, system.spec
    return SystemSummary(
        name=system.name,
        chip=chip.name,
        nodes=system.nodes,
        chips=system.chips,
        dies=system.dies,
        precision=precision,
        peak_flops=system.dies * chip.peak(precision),
        hbm_capacity=system.chips * chip.hbm_capacity,
        hbm_bandwidth=system.chips * chip.hbm_bandwidth,
        scale_up=spec.scale_up.name,
        scale_up_domain_chips=system.scale_up_domain_chips,
        scale_up_bandwidth=system.chips * spec.scale_up.bandwidth_per_chip,
        scale_out=spec.scale_out.name,
        scale_out_bandwidth=system.chips * spec.scale_out.bandwidth_per_chip,
        power=system.power,
        price_usd=system.price_usd,
    )


# ratio name -> summary attribute; each ratio is first / second
RATIOS: dict[str, str] = {
    "compute": "peak_flops",
    "memory": "hbm_capacity",
    "memory_bandwidth": "hbm_bandwidth",
    "scale_up_bandwidth": "scale_up_bandwidth",
    "scale_out_bandwidth": "scale_out_bandwidth",
    "power": "power",
    "price": "price_usd",
    "flops_per_watt": "flops_per_watt",
    "usd_per_pflops": "usd_per_pflops",
}


@dataclass(frozen=True)
class SystemComparison:
    first: SystemSummary
    second: SystemSummary
    ratios: dict[str, float]  # first / second, keys of RATIOS

    def as_dict(self) -> dict[str, object]:
        return {
            "precision": self.first.precision,
            "first": self.first.as_dict(),
            "second": self.second.as_dict(),
            "ratios_first_over_second": dict(self.ratios),
        }


def compare_systems(first: System, second: System, precision: str = "bf16") -> SystemComparison:
    """Compare two systems; every ratio is first / second."""
    a, b = summarize(first, precision), summarize(second, precision)
    ratios = {name: getattr(a, attr) / getattr(b, attr) for name, attr in RATIOS.items()}
    return SystemComparison(a, b, ratios)
