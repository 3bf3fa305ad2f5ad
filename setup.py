"""LPNSR for BasicSR: install with `pip install --no-build-isolation -e .` (the Makefile does it); a plain
`pip install .` also installs the options and the demonstration weights (under `<prefix>/share/lpnsr_arch`)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def project_data_files() -> list:
    """``options/`` and the shipped ``weights/demo/`` for a plain (non-editable) install: installed under
    ``<prefix>/share/lpnsr_arch``, where the package looks after the current folder (``lpnsr_arch.weights``)."""
    files = sorted(HERE.glob('options/**/*.yml'))
    files += sorted(path for path in (HERE / 'weights' / 'demo').glob('*') if path.is_file())
    folders = {}
    for path in files:
        relative = path.relative_to(HERE)
        folders.setdefault(str(Path('share', 'lpnsr_arch', relative.parent)), []).append(str(relative))
    return sorted(folders.items())


def read_requirements() -> list:
    lines = (HERE / 'requirements.txt').read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


setup(
    name='lpnsr_arch',
    version='0.1.0',
    description='LPNSR (learned-noise residual-shifting diffusion super-resolution) as a BasicSR plugin',
    long_description=(HERE / 'README.md').read_text() if (HERE / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['lpnsr_arch', 'lpnsr_arch.*']),
    install_requires=read_requirements(),
    entry_points={'console_scripts': ['lpnsr = lpnsr_arch.inference:cli']},
    data_files=project_data_files(),
    license='Apache-2.0',
)
