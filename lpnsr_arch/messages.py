"""Wording shared by error and log messages, and the value check behind the most common of them."""
from __future__ import annotations

import dataclasses
import numbers
from typing import Mapping, Optional, Sequence, Type, TypeVar

import torch

__all__ = ['name_list', 'integer_at_least', 'from_option_block']

Block = TypeVar('Block')


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


def from_option_block(cls: Type[Block], opt: Optional[Mapping], block: str) -> Block:
    """The dataclass ``cls`` built from an options block (``None``: the defaults); a key that is not one of its
    fields raises ``KeyError('unknown <block> option(s) [...]; expected a subset of [...]')``."""
    opt = dict(opt or {})
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(opt) - known)
    if unknown:
        raise KeyError(f'unknown {block} option(s) {unknown}; expected a subset of {sorted(known)}')
    return cls(**opt)
