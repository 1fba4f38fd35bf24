"""LFM Satellite: a local voice satellite for Home Assistant running LFM2-Audio on ONNX Runtime."""

__version__ = "0.1.0"
