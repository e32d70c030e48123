"""spikescale: how far to scale the first layer of a CNN converted to a spiking network."""

__version__ = "0.1.0"
