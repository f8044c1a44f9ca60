"""The Deployment builder and its validation: defaults, precision per op class, refusals that say why."""

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.deployment import build_deployment, precisions_for
from cloudmatrix.specs.hardware import load_system
from cloudmatrix.specs.model import load_model

R1 = load_model("deepseek-r1")
CM = load_system("cloudmatrix384")


def test_builder_applies_the_paper_expert_layouts_and_validates():
    dec = build_deployment(R1, dies=320, system=CM)
    assert (dec.ep_degree, dec.shared_expert_dies, dec.redundant_experts) == (320, 32, 32)
    pre = build_deployment(R1, dies=32, shared_expert_dies=0, redundant_experts=None)
    assert (pre.ep_degree, pre.redundant_experts) == (32, 32)
    # EP defaults to dies / MoE TP
    assert build_deployment(R1, dies=16, moe_tp=2).ep_degree == 8


def test_fp4_checkpoint_quantises_the_mlps_not_attention():
    p = precisions_for("fp4")
    assert (p.experts, p.dense_ffn) == ("fp4", "fp4")
    assert p.attn_proj == "fp8" and p.head == "bf16"
    p8 = precisions_for("int8")
    assert {p8.attn_proj, p8.experts, p8.dense_ffn} == {"int8"}


@pytest.mark.parametrize(
    "knobs,match",
    [
        (dict(dies=32, moe_tp=3), "MoE TP degree 3"),
        (dict(dies=32, ep=16, moe_tp=4), r"EP 16 x MoE TP 4 = 64 dies must divide"),
        (dict(dies=32, attn_tp=3), "attention TP degree 3"),
        (dict(dies=320, moe_tp=2, ep=160, shared_expert_dies=16), "not modelled"),
        (dict(dies=32, precision="fp6"), "unknown precision"),
        (dict(dies=32, precision="fp8"), "no native fp8"),
    ],
)
def test_unsupported_or_impossible_layouts_raise_one_clear_error(knobs, match):
    with pytest.raises(CloudMatrixError, match=match):
        build_deployment(R1, system=CM, **knobs)
