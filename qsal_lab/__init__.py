"""qsal_lab: quantized, saliency-aware, lightweight image classifiers (the library behind the qsal-lab book)."""
__version__ = "0.1.0"
