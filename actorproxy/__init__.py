"""actorproxy: an OpenAI-compatible LLM gateway on supervised trio actors."""

__version__ = "0.1.0"
