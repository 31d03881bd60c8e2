"""The `openai` engine: any OpenAI-compatible server, streamed over HTTP."""

from __future__ import annotations

from engines.openai.engine import OpenAIEngine

__all__ = ["OpenAIEngine"]
