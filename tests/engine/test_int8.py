"""INT8 W8A8: error bounds, Int8Linear against float, the int_mm path on CPU, model quantisation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cloudmatrix.engine.model.experts import ExpertWeights, LocalExperts  # noqa: E402
from cloudmatrix.engine.quant import (  # noqa: E402
    Int8Experts,
    Int8Linear,
    dequantize,
    int8_matmul,
    int8_path_counts,
    quantize_model,
    quantize_per_channel,
    quantize_per_token,
)
from cloudmatrix.engine.quant import int8 as q8  # noqa: E402
from cloudmatrix.errors import CloudMatrixError  # noqa: E402


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_per_token_error_is_at_most_half_a_step():
    # rows of very different size: each gets its own scale
    x = torch.randn(64, 96, generator=_gen()) * torch.logspace(-3, 2, 64)[:, None]
    q, s = quantize_per_token(x)
    assert q.dtype == torch.int8 and s.shape == (64, 1) and s.dtype == torch.float32
    err = (dequantize(q, s) - x).abs()
    assert torch.all(err <= s / 2 * (1 + 1e-5))
    assert int(q.abs().max()) == 127  # each row's largest element uses the full range
    assert torch.equal(quantize_per_token(-x)[0], -q)  # symmetric


def test_zero_rows_quantise_to_zero():
    x = torch.zeros(3, 8)
    x[1] = torch.arange(8.0)
    q, s = quantize_per_token(x)
    assert torch.isfinite(s).all()
    assert torch.equal(dequantize(q, s)[0], torch.zeros(8))
    assert torch.allclose(dequantize(q, s)[1], x[1], atol=7 / 254 + 1e-6)


def test_per_channel_scales_are_per_output_row():
    w = torch.randn(48, 64, generator=_gen(1))
    w[5] *= 100  # one loud channel must not coarsen the others
    q, s = quantize_per_channel(w)
    assert s.shape == (48,)
    err = (dequantize(q, s[:, None]) - w).abs()
    assert torch.all(err <= s[:, None] / 2 * (1 + 1e-5))
    assert float(s[0]) < float(s[5]) / 10


@pytest.fixture
def int8_mode():
    """Set the INT8 matmul mode for one test and restore it after."""
    before = q8.get_int8_matmul_mode()
    yield q8.set_int8_matmul_mode
    q8.set_int8_matmul_mode(before)


def test_int8_matmul_uses_int_mm_on_cpu_and_is_exact(int8_mode):
    int8_mode("int_mm")
    a = torch.randint(-127, 128, (33, 70), dtype=torch.int8, generator=_gen(2))
    w = torch.randint(-127, 128, (50, 70), dtype=torch.int8, generator=_gen(3))
    out, path = int8_matmul(a, w)
    assert path == q8.PATH_INT_MM
    assert torch.equal(out, (a.long() @ w.long().t()).float())


def test_auto_mode_follows_the_cpu(int8_mode):
    int8_mode("auto")
    expected = q8.PATH_INT_MM if q8.cpu_has_int8_dot() else q8.PATH_FALLBACK
    assert q8.select_path(torch.device("cpu"), 64, 64) == expected
    with pytest.raises(CloudMatrixError, match="mode"):
        q8.set_int8_matmul_mode("fast")


@pytest.mark.parametrize("m", [1, 7, 16, 17, 100])
def test_int8_linear_matches_float_linear(m, int8_mode):
    int8_mode("int_mm")
    torch.manual_seed(4)
    lin = torch.nn.Linear(256, 192)
    x = torch.randn(m, 256)
    qlin = Int8Linear.from_float(lin)
    with torch.no_grad():
        ref = lin(x)
    y = qlin(x)
    assert _rel_err(y, ref) < 0.02
    assert qlin.last_path == q8.PATH_INT_MM and qlin.path_counts[q8.PATH_INT_MM] == 1


def test_int8_linear_keeps_leading_dims_and_dtype():
    torch.manual_seed(5)
    lin = torch.nn.Linear(64, 32, bias=False).to(torch.bfloat16)
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    y = Int8Linear.from_float(lin)(x)
    assert y.shape == (2, 5, 32) and y.dtype == torch.bfloat16
    with torch.no_grad():
        assert _rel_err(y, lin(x)) < 0.03
    with pytest.raises(CloudMatrixError, match="in_features"):
        Int8Linear.from_float(lin)(torch.randn(3, 63))


def test_fallback_path_is_recorded_and_agrees(int8_mode):
    torch.manual_seed(6)
    lin = torch.nn.Linear(128, 64)
    x = torch.randn(9, 128)
    int8_mode("int_mm")
    fast = Int8Linear.from_float(lin)
    y_fast = fast(x)
    int8_mode("float")
    slow = Int8Linear.from_float(lin)
    y_slow = slow(x)
    assert slow.last_path == q8.PATH_FALLBACK and fast.last_path == q8.PATH_INT_MM
    assert torch.allclose(y_fast, y_slow, rtol=1e-6, atol=1e-6)  # same integers, exact sums below 2**24
    assert Int8Linear.from_float(lin)(x[:0]).shape == (0, 64)


def _expert_weights(e: int = 6, h: int = 64, i: int = 32, seed: int = 7) -> ExpertWeights:
    g = _gen(seed)
    return ExpertWeights(
        torch.randn(e, i, h, generator=g) / h**0.5,
        torch.randn(e, i, h, generator=g) / h**0.5,
        torch.randn(e, h, i, generator=g) / i**0.5,
    )


@pytest.mark.parametrize("mode", ["int_mm", "float"])
def test_int8_experts_backend_matches_local_experts(mode, int8_mode):
    int8_mode(mode)
    w = _expert_weights()
    g = _gen(8)
    h = torch.randn(40, 64, generator=g)
    ids = torch.stack([torch.randperm(6, generator=g)[:2] for _ in range(40)])
    wt = torch.rand(40, 2, generator=g)
    ref = LocalExperts(w)(h, ids, wt)
    backend = Int8Experts.from_float(w)
    out = backend(h, ids, wt)
    assert _rel_err(out, ref) < 0.03
    # two int8 matmuls (fused gate|up, down) per expert that got tokens
    used = len(set(ids.reshape(-1).tolist()))
    path = q8.PATH_INT_MM if mode == "int_mm" else q8.PATH_FALLBACK
    assert backend.path_counts == {path: 2 * used}
    assert backend(h[:0], ids[:0], wt[:0]).shape == (0, 64)


class _ToyMoE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = torch.nn.Linear(64, 6, bias=False)  # the router: must stay float
        self.experts = LocalExperts(_expert_weights())
        self.up_proj = torch.nn.Linear(64, 64)

    def forward(self, x):
        w, ids = self.gate(x).softmax(-1).topk(2)
        return self.up_proj(x) + self.experts(x, ids, w)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(64)
        self.moe = _ToyMoE()
        self.kv_b_proj = torch.nn.Linear(64, 64, bias=False)
        self.lm_head = torch.nn.Linear(64, 100, bias=False)

    def forward(self, x):
        return self.lm_head(self.moe(self.norm(x)) + self.kv_b_proj(x))


def test_quantize_model_replaces_large_linears_and_experts_only(int8_mode):
    int8_mode("int_mm")
    torch.manual_seed(9)
    model = _Toy()
    x = torch.randn(20, 64)
    with torch.no_grad():
        ref = model(x)
    report = quantize_model(model)
    assert report.quantized == ["moe.up_proj"]
    assert sorted(report.kept_float) == ["kv_b_proj", "lm_head", "moe.gate"]
    assert report.experts == ["moe.experts"]
    assert isinstance(model.moe.experts, Int8Experts) and isinstance(model.moe.gate, torch.nn.Linear)
    with torch.no_grad():
        out = model(x)
    assert _rel_err(out, ref) < 0.03
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8
    counts = int8_path_counts(model)
    assert counts[q8.PATH_INT_MM] > 0 and counts[q8.PATH_FALLBACK] == 0
    with pytest.raises(CloudMatrixError, match="no nn.Linear"):
        quantize_model(torch.nn.Sequential(torch.nn.ReLU()))
