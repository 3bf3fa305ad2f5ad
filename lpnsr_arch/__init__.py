"""LPNSR for BasicSR: learned-noise residual-shifting diffusion super-resolution as a BasicSR plugin.

Importing this package first applies the compatibility fixes BasicSR 1.4.2 needs on current torch/torchvision, then
registers every network (``archs/*_arch.py``), dataset (``data/*_dataset.py``) and training model
(``models/*_model.py``) in BasicSR's registries.
"""
from lpnsr_arch.compat import install_basicsr_fixes, install_torchvision_shim

install_torchvision_shim()
install_basicsr_fixes()  # device-agnostic resume, contiguous DiffJPEG (imports basicsr: after the shim)

from lpnsr_arch import archs, data, losses, models  # noqa: E402,F401  (registers everything)

__version__ = '0.1.0'
