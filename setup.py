"""LPNSR for BasicSR: install with `pip install --no-build-isolation -e .` (the Makefile does it)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


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
    license='Apache-2.0',
)
