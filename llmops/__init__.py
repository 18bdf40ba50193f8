"""llmops: a fine-tune-and-serve job for a language model as a Hydra recipe."""

__version__ = "0.1.0"
