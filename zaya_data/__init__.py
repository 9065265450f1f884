"""zaya-data: training mixtures for reasoning language models (the ZAYA1-8B recipe)."""

__version__ = "0.1.0"
