"""A pool's `backend` key selects the serving stack's kernel curves; an unknown one is a one-line error."""

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.context import DieContext
from cloudmatrix.sim.scenario import load_scenario


def test_pool_backend_reaches_the_deployment():
    sc = load_scenario("gb200-nvl72", {"decode.backend": "sglang"})
    system, model = sc.check()
    dec = sc.deployment(sc.decode, model)
    assert dec.backend == "sglang"
    assert sc.deployment(sc.prefill, model).backend is None  # per pool; absent: the default fit
    assert DieContext(model, system, dec).system is system.for_backend("sglang")


def test_unknown_pool_backend_is_one_line():
    with pytest.raises(CloudMatrixError) as e:
        load_scenario("gb200-nvl72", {"decode.backend": "sgl"})
    msg = str(e.value)
    assert "unknown backend 'sgl'" in msg and "sglang" in msg and "\n" not in msg
