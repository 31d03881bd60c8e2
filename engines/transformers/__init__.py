"""transformers' own continuous batching in the same process. torch and transformers
are imported only by `start()`."""

from engines.transformers.engine import TransformersEngine, TransformersOptions, parse_options

__all__ = ["TransformersEngine", "TransformersOptions", "parse_options"]
