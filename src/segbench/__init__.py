"""segbench: which segmentation model to use on your data, how much better it is, what it costs."""

__version__ = "0.1.0"
