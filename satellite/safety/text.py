"""The text filter: replies must not say the blocked terms (`safety.blocked_terms`).

Terms match case-insensitively as whole words (a term of several words matches them with any
whitespace between), so "ass" does not block "class". The reply's text is checked as it
grows; in interleaved generation its text runs ahead of its audio, so a blocked term stops
the reply before it is spoken, or at the latest while it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


class TextFilter:
    def __init__(self, terms: Sequence[str], enabled: bool = True) -> None:
        words = [t.strip() for t in terms if t.strip()]
        self.enabled = enabled and bool(words)
        parts = [r"\s+".join(re.escape(w) for w in term.split()) for term in words]
        self._pattern = (
            re.compile(r"(?<!\w)(" + "|".join(parts) + r")(?!\w)", re.IGNORECASE) if parts else None
        )

    def blocked(self, text: str) -> str | None:
        """The first blocked term in `text` (as written there), or None."""
        if not self.enabled or self._pattern is None:
            return None
        match = self._pattern.search(text)
        return None if match is None else match.group(1)
