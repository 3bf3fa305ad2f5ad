"""BasicSR's discovery rule: import every module of a folder whose name ends with a given suffix."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import List


def import_modules_ending_with(package: str, init_file: str, suffix: str) -> List[str]:
    """Import ``package.<name>`` for every ``<name><suffix>.py`` beside ``init_file``; returns the module names."""
    folder = Path(init_file).resolve().parent
    names = sorted(p.stem for p in folder.glob(f'*{suffix}.py'))
    for name in names:
        importlib.import_module(f'{package}.{name}')
    return names
