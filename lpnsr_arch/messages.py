"""Wording shared by error and log messages, and the value check behind the most common of them."""
from __future__ import annotations

import numbers
from typing import Sequence

import torch

__all__ = ['name_list', 'integer_at_least']


def name_list(names: Sequence[str], shown: int = 5) -> str:
    """``names`` for a one-line message: the first ``shown``, then how many more (``'none'`` when empty)."""
    if not names:
        return 'none'
    more = f' ... (+{len(names) - shown} more)' if len(names) > shown else ''
    return ', '.join(str(name) for name in names[:shown]) + more


def integer_at_least(value: object, name: str, low: int) -> int:
    """``value`` as an ``int`` when it is an integer (Python, numpy or 0-d integer tensor; not a bool) of at least
    ``low``, else ``ValueError('<name> must be an integer >= <low>, got <value>')``."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
    return int(value)
