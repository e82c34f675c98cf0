"""mixsweep's head side: spec, strategies, the controller loop and the sweep directory it owns."""

__version__ = "0.1.0"
