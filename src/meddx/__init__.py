"""meddx: medical image diagnosis, from labelled images to validated, explainable models."""

__version__ = "0.1.0"
