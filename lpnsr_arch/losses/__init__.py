"""Losses: every ``*_loss.py`` here is imported so that its classes register in BasicSR's ``LOSS_REGISTRY``."""
from lpnsr_arch.registry_scan import import_modules_ending_with

__all__ = import_modules_ending_with(__name__, __file__, '_loss')
