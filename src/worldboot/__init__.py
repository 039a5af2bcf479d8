"""worldboot: bootstrap world models from dynamics models in token-based multimodal foundation models."""

__version__ = "0.1.0"
