"""MagicInfinite: talking videos of any length from a portrait, a voice and a prompt.

Pure PyTorch; never imports ComfyUI.
"""

__version__ = "0.1.0"
