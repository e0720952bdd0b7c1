"""What a real training step keeps for backward, measured: the quantity the inspector prices
(`archlab.model.real_step_saved_bytes`, whose docstring and `archlab/model/_held.py` say how
and why saves are counted once the loss exists, not when they are packed)."""

from archlab.model import real_step_saved_bytes as real_saved_bytes

__all__ = ["real_saved_bytes"]
