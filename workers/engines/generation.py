"""What the paged engine keeps per prompt while it generates, and its incremental detokenizer.

Streaming is iteration-level: after every step each row with an ``on_token`` callback gets the
text its new token completed (held back while it ends in a partial UTF-8 character), and the
row's final text is the concatenation of what it streamed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerationRow:
    """One prompt being decoded, and what it has produced so far."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    on_token: Callable[[str], None] | None = None
    new_ids: list[int] = field(default_factory=list)
    streamed: list[str] = field(default_factory=list)
    _prefix_offset: int = 0
    _read_offset: int = 0

    def stream_piece(self, tokenizer: Any, final: bool) -> str:
        """The text completed since the last piece (the vLLM/TGI incremental detokenizer)."""
        ids = self.new_ids
        prefix_text = tokenizer.decode(ids[self._prefix_offset:self._read_offset],
                                       skip_special_tokens=True)
        new_text = tokenizer.decode(ids[self._prefix_offset:], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and (final or not new_text.endswith("\ufffd")):
            self._prefix_offset, self._read_offset = self._read_offset, len(ids)
            piece = new_text[len(prefix_text):]
            self.streamed.append(piece)
            return piece
        return ""


def final_text(row: GenerationRow, tokenizer: Any) -> str:
    """The row's output: what it streamed when it streamed, else its decoded tokens."""
    if row.on_token is not None:
        return "".join(row.streamed)
    return str(tokenizer.decode(row.new_ids, skip_special_tokens=True))
