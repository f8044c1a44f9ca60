"""Plan requests from a TOML file: keys as the flags, unknown keys and bad values refused."""

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.plan.search.request import load_plan_request


def test_file_keys_and_flag_overrides(tmp_path):
    p = tmp_path / "req.toml"
    p.write_text('model = "deepseek-v3"\nsystems = ["cloudmatrix384", "gb200-nvl72"]\nisl = 2048\nrate = 5.0\n')
    req = load_plan_request(p, rate=7.5, isl=None)
    assert req.systems == ("cloudmatrix384", "gb200-nvl72") and req.model == "deepseek-v3"
    assert req.isl == 2048 and req.rate == 7.5 and not req.capacity_mode


@pytest.mark.parametrize(
    "text, needle",
    [("ttft = 3\n", "unknown key"), ("rate = 1.0\nconcurrency = 4\n", "not both"), ("tpot_p90 = -1.0\n", "tpot-p90"),
     ("max_utilisation = 1.0\n", "max-utilisation")],
)  # fmt: skip
def test_bad_requests_say_what_to_fix(tmp_path, text, needle):
    p = tmp_path / "req.toml"
    p.write_text(text)
    with pytest.raises(CloudMatrixError, match=needle):
        load_plan_request(p)
