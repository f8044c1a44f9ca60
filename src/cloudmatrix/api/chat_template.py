"""Chat messages -> prompt text, with the model's own template (tokenizer_config.json) or a plain one.

The template is Jinja, rendered in a sandbox as transformers does, with the special tokens the
tokenizer config names (bos_token, eos_token) in scope.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudmatrix.errors import CloudMatrixError

# For a model folder without a chat template: role-labelled turns, then the assistant's label.
PLAIN_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class ChatTemplate:
    def __init__(self, source: str, special_tokens: dict[str, str] | None = None):
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:  # templates call this to refuse a conversation
            raise CloudMatrixError(f"the chat template refused the messages: {message}")

        env.globals["raise_exception"] = raise_exception
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise CloudMatrixError(f"the model's chat template does not parse: {e}") from None
        self.source = source
        self._special = special_tokens or {}

    @classmethod
    def plain(cls) -> ChatTemplate:
        return cls(PLAIN_TEMPLATE)

    @classmethod
    def for_model(cls, model_dir: str | Path) -> ChatTemplate:
        """The folder's tokenizer_config.json template (a string, or the "default" of a named list)."""
        path = Path(model_dir) / "tokenizer_config.json"
        cfg: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        source = cfg.get("chat_template")
        if isinstance(source, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in source}
            source = named.get("default")
        jinja = Path(model_dir) / "chat_template.jinja"  # transformers-5 writes it as its own file
        if not source and jinja.exists():
            source = jinja.read_text()
        special = {k: v for k, v in cfg.items() if k.endswith("_token") and isinstance(v, str)}
        return cls(source or PLAIN_TEMPLATE, special)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from jinja2 import TemplateError

        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt, **self._special
            )
        except TemplateError as e:
            raise CloudMatrixError(f"the chat template failed on these messages: {e}") from None
