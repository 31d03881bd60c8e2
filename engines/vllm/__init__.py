"""vLLM in the same process (AsyncLLM). vLLM itself is imported only by `start()`."""

from engines.vllm.engine import VLLMEngine, VLLMOptions

__all__ = ["VLLMEngine", "VLLMOptions"]
