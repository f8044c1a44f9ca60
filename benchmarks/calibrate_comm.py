"""Fit the EP all-to-all parameters of each fabric to the paper's dispatch/combine table and print the fit.

    python benchmarks/calibrate_comm.py

The fitted efficiencies and sync cost are the values written in the hardware files
(cloudmatrix384.toml scale_up, hgx-h800.toml scale_out).
"""

from cloudmatrix.perf.calibration import EP_DEGREES, EP_LATENCY_US, fit_ep_fabric

# link rate per die and one-message latency of each plane (hardware files, with their sources). The latency is a
# fixed INPUT (UB: the paper's 1.9 us NPU-NPU read; RDMA: an assumed 3 us), not fitted: three unknowns, 8 rows each.
FABRICS = {"cloudmatrix384": (196e9, 1.9e-6), "h800": (50e9, 3e-6)}

for system, (bw, lat) in FABRICS.items():
    eff_d, eff_c, sync, pred = fit_ep_fabric(system, bw, lat)
    print(
        f"{system}: dispatch_efficiency={eff_d:.3f} combine_efficiency={eff_c:.3f} "
        f"sync_per_log2_rank={sync * 1e6:.2f} us"
    )
    for op in ("dispatch", "combine"):
        for ep, pub, model in zip(EP_DEGREES, EP_LATENCY_US[(system, op)], pred[op], strict=True):
            print(
                f"  {op:8s} EP{ep:<4d} published {pub:4d} us  model {model * 1e6:6.1f} us  "
                f"error {model * 1e6 / pub - 1:+.1%}"
            )
