"""Text in and out with Hugging Face `tokenizers`: the model folder's tokenizer.json, its EOS ids,
and incremental detokenisation that holds back text which may still become a stop string."""

from __future__ import annotations

import json
from pathlib import Path

from cloudmatrix.errors import CloudMatrixError


def load_tokenizer(model_dir: str | Path):
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.exists():
        raise CloudMatrixError(f"no tokenizer.json in {model_dir}; a model folder needs its tokenizer for text")
    return Tokenizer.from_file(str(path))


def eos_token_ids(model_dir: str | Path, tokenizer=None) -> frozenset[int]:
    """EOS ids from generation_config.json, else config.json, else tokenizer_config.json's eos_token."""
    folder = Path(model_dir)
    for name in ("generation_config.json", "config.json"):
        f = folder / name
        if f.exists():
            eos = json.loads(f.read_text()).get("eos_token_id")
            if eos is not None:
                return frozenset(eos if isinstance(eos, list) else [eos])
    f = folder / "tokenizer_config.json"
    if tokenizer is not None and f.exists():
        tok = json.loads(f.read_text()).get("eos_token")
        if isinstance(tok, dict):
            tok = tok.get("content")
        if isinstance(tok, str) and tokenizer.token_to_id(tok) is not None:
            return frozenset([tokenizer.token_to_id(tok)])
    return frozenset()


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text increments.

    Text is decoded over a short window of recent tokens (the prefix/read offsets of TGI and vLLM),
    so a multi-byte character split across tokens is only emitted once complete, and each step costs
    a few tokens, not the whole output. With stop strings, the last (longest stop - 1) characters are
    held back until they can no longer start a stop string; when one appears, the text before it is
    the rest of the output and `stopped` becomes True.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = (), prompt_ids: list[int] | None = None):
        self.tok = tokenizer
        self.stop = stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        # a few prompt tokens seed the window so the first output token decodes with its context
        self.ids: list[int] = list(prompt_ids[-4:]) if prompt_ids else []
        self.prefix = 0
        self.read = len(self.ids)
        self.pending = ""  # decoded, not yet emitted
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def add(self, new_ids: list[int]) -> str:
        """Text made final by these tokens (empty while a character or a possible stop string is open)."""
        if self.stopped:
            return ""
        self.ids.extend(new_ids)
        before = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self.pending += text[len(before) :]
            self.prefix, self.read = self.read, len(self.ids)
        return self._release(final=False)

    def flush(self) -> str:
        """The rest of the text when the request ends."""
        if self.stopped:
            return ""
        before = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        if len(text) > len(before):
            self.pending += text[len(before) :]
            self.prefix = self.read = len(self.ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stop:
            hits = [(i, s) for s in self.stop if (i := self.pending.find(s)) >= 0]
            if hits:
                cut = min(i for i, _ in hits)
                out, self.pending, self.stopped = self.pending[:cut], "", True
                return out
        keep = 0 if final else min(self.hold, len(self.pending))
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(out) :]
        return out
