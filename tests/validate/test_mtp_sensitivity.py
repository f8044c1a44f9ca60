"""The MTP sensitivity benchmark runs a refused MTP row under MTP: more accepted drafts, shorter predicted TPOT."""

import sys
from pathlib import Path

from silicon_rows import agg, write

from cloudmatrix.validate.silicon_csv import deduplicate, read_rows

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import validate_mtp_sensitivity as S  # noqa: E402


def _mtp_row(tmp_path, **kw):
    r = agg("mtp", **{"system": "b200_sxm", "tp": 8, "dp": 1, "moe_tp": 8, "ep": 1, "isl": 256, "osl": 64, **kw})
    r["backend_version"] = "1.2.0rc6.post3"
    r["silicon_data_source"] += "; image=nvcr.io/nvidia/tensorrt-llm/release:1.2.0rc6.post3"
    (m,) = deduplicate(read_rows(write(tmp_path / "s.csv", [r])))
    assert m.row.mtp_run
    return m


def test_a_higher_acceptance_predicts_a_shorter_tpot(tmp_path):
    m = _mtp_row(tmp_path, conc=4, batch=4)
    ((base, low, high),) = S.sensitivity([m], (0.5, 0.9), workers=1)
    assert not (base.refused or low.refused or high.refused), (base, low, high)
    assert (base.acceptance, low.acceptance, high.acceptance) == (None, 0.5, 0.9)
    assert high.tpot < low.tpot
    assert S.scenario(m, 0.5).scenario.mtp.depth == 3 and S.scenario(m, None).scenario.mtp.depth == 0


def test_the_recipe_drafts_one_token_with_attention_dp(tmp_path):
    m = _mtp_row(tmp_path, conc=64, tp=1, dp=8, moe_tp=1, ep=8, batch=8)
    assert S.scenario(m, 0.7).scenario.mtp.depth == 1
    # fp8 with DP attention: MAX_BATCH_SIZE = 64 / 8 per rank, (2 x 8 + 256 + 64) rounded up to 64
    assert S.mtp_step_tokens(m.row, 1) == 384
