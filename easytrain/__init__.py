"""easytrain: a terminal wizard and trainer for Stable Diffusion LoRAs."""

__version__ = "0.1.0"
