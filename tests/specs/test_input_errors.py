"""Bad catalog and config files: NaN/inf numbers, wrong JSON types, non-UTF-8 bytes; each a one-line error."""

import json
import math

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.specs.hardware import load_chip, load_system
from cloudmatrix.specs.model import load_model, spec_from_config
from cloudmatrix.specs.units import UnitError, parse_quantity

from .test_hardware import CHIP, SYSTEM, write
from .test_model import LLAMA_TINY


@pytest.mark.parametrize(
    "chip, system, needle",
    [
        (CHIP.replace('"96 GB"', "inf"), SYSTEM, "die.hbm_capacity: expected a finite bytes quantity"),
        (CHIP.replace('"96 GB"', '"1e999 GB"'), SYSTEM, "die.hbm_capacity: expected a finite bytes quantity"),
        (CHIP.replace('"4 TB/s"', "nan"), SYSTEM, "die.hbm_bandwidth: expected a finite"),
        (CHIP.replace("gemm = 0.8", "gemm = nan"), SYSTEM, "efficiency.gemm"),
        (CHIP, SYSTEM.replace("price_per_node_usd = 2e5", "price_per_node_usd = inf"), "price_per_node_usd"),
        (CHIP, SYSTEM.replace('latency = "2 us"', "latency = inf"), "scale_up.latency: expected a finite"),
    ],
    ids=["inf-bytes", "overflow", "nan-rate", "nan-fraction", "inf-price", "inf-latency"],
)
def test_catalog_numbers_must_be_finite(tmp_path, chip, system, needle):
    with pytest.raises(CloudMatrixError) as e:
        load_system(write(tmp_path, chip, system))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_parse_quantity_rejects_non_finite():
    for v in (math.inf, -math.inf, math.nan, "1e400 W"):
        with pytest.raises(UnitError, match="finite"):
            parse_quantity(v, "watts")
    assert parse_quantity("1.5 kW", "watts") == 1500.0


def test_non_utf8_files_are_one_line_errors(tmp_path):
    chip = tmp_path / "latin1-chip.toml"
    chip.write_bytes(CHIP.replace('vendor = "', 'vendor = "\xe9').encode("latin-1"))
    with pytest.raises(CloudMatrixError, match="is not UTF-8 text.*save it as UTF-8"):
        load_chip(chip)
    cfg = tmp_path / "config.json"
    cfg.write_bytes(b'{"model_type": "llama", "name": "\xff"}')
    with pytest.raises(CloudMatrixError, match="is not UTF-8 text"):
        load_model(str(cfg))


def test_utf8_with_a_byte_order_mark_is_read(tmp_path):
    d = tmp_path / "bom"
    d.mkdir()
    (d / "config.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(LLAMA_TINY).encode())
    assert load_model(str(d)).hidden == LLAMA_TINY["hidden_size"]


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ({**LLAMA_TINY, "hidden_size": math.nan}, "hidden_size = nan is not an integer"),
        ({**LLAMA_TINY, "hidden_size": math.inf}, "hidden_size = inf is not an integer"),
        ({**LLAMA_TINY, "num_attention_heads": -math.inf}, "num_attention_heads = -inf is not an integer"),
        ({"text_config": "llama"}, "text_config is str"),
        ({"text_config": None}, "text_config is NoneType"),
        ({"text_config": [LLAMA_TINY]}, "text_config is list"),
        ({**LLAMA_TINY, "tie_word_embeddings": "false"}, "tie_word_embeddings = 'false' is not a boolean"),
        ({**LLAMA_TINY, "tie_word_embeddings": 1}, "tie_word_embeddings = 1 is not a boolean"),
        ({**LLAMA_TINY, "model_type": ["llama"]}, "model_type = ['llama'] is not a string"),
        ({**LLAMA_TINY, "architectures": "LlamaForCausalLM"}, "architectures = 'LlamaForCausalLM' is not a list"),
        ({**LLAMA_TINY, "num_hidden_layers": 10**12}, "num_hidden_layers = 1000000000000 is above the 10,000"),
        ({**LLAMA_TINY, "hidden_size": 2**63}, "hidden_size = 9223372036854775808 is above"),
    ],
    ids=[
        "nan",
        "inf",
        "-inf",
        "text-str",
        "text-null",
        "text-list",
        "tie-str",
        "tie-int",
        "type-list",
        "arch-str",
        "layers-huge",
        "hidden-huge",
    ],
)
def test_bad_config_values_name_file_and_field(cfg, needle):
    with pytest.raises(CloudMatrixError) as e:
        spec_from_config(cfg, "t", "/x/config.json")
    assert str(e.value).startswith("/x/config.json: ") and needle in str(e.value), str(e.value)


def test_json_nan_and_infinity_in_a_file_are_refused(tmp_path):
    for literal in ("NaN", "Infinity"):
        p = tmp_path / f"{literal}.json"
        p.write_text(json.dumps(LLAMA_TINY).replace('"hidden_size": 64', f'"hidden_size": {literal}'))
        assert literal in p.read_text()
        with pytest.raises(CloudMatrixError, match="hidden_size = .* is not an integer"):
            load_model(str(p))


def test_tie_word_embeddings_false_and_true_are_read_as_written():
    untied = spec_from_config({**LLAMA_TINY, "tie_word_embeddings": False}, "t")
    tied = spec_from_config({**LLAMA_TINY, "tie_word_embeddings": True}, "t")
    assert (untied.tie_embeddings, tied.tie_embeddings) == (False, True)
    assert untied.total_params() - tied.total_params() == LLAMA_TINY["vocab_size"] * LLAMA_TINY["hidden_size"]
