"""Wording shared by error and log messages."""
from __future__ import annotations

from typing import Sequence

__all__ = ['name_list']


def name_list(names: Sequence[str], shown: int = 5) -> str:
    """``names`` for a one-line message: the first ``shown``, then how many more (``'none'`` when empty)."""
    if not names:
        return 'none'
    more = f' ... (+{len(names) - shown} more)' if len(names) > shown else ''
    return ', '.join(str(name) for name in names[:shown]) + more
