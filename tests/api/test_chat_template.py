"""Chat messages -> prompt text: the default model's template renders as transformers renders it, folders
without a template get the plain one, and a template that refuses a conversation is a user error."""

from __future__ import annotations

import json

import pytest

from cloudmatrix.api.chat_template import ChatTemplate
from cloudmatrix.errors import CloudMatrixError

MESSAGES = [
    {"role": "system", "content": "A room in the castle"},
    {"role": "user", "content": "What news from Verona?"},
    {"role": "assistant", "content": "None, my lord."},
    {"role": "user", "content": "Then go."},
]


def test_default_model_template_matches_transformers():
    transformers = pytest.importorskip("transformers")
    runtime = pytest.importorskip("cloudmatrix.engine.runtime.engine")
    folder = runtime.DEFAULT_MODEL_DIR
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    for gen in (True, False):
        want = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=gen)
        assert ChatTemplate.for_model(folder).render(MESSAGES, gen) == want


def test_whitespace_control_as_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    runtime = pytest.importorskip("cloudmatrix.engine.runtime.engine")
    source = "{% for m in messages %}\n    {{ m['role'] }}={{ m['content'] }};\n  {% endfor %}\n{{ eos_token }}"
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(runtime.DEFAULT_MODEL_DIR / "tokenizer.json"), eos_token="</s>", chat_template=source
    )
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": source, "eos_token": "</s>"}))
    want = tok.apply_chat_template(MESSAGES[:2], tokenize=False)
    assert ChatTemplate.for_model(tmp_path).render(MESSAGES[:2], add_generation_prompt=False) == want


def test_plain_template_without_one(tmp_path):
    text = ChatTemplate.for_model(tmp_path).render(MESSAGES[1:2])
    assert text == "User: What news from Verona?\n\nAssistant:"


def test_template_refusal_is_a_user_error():
    t = ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}")
    with pytest.raises(CloudMatrixError, match="first must be user"):
        t.render(MESSAGES)
