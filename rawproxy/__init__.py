"""rawproxy: a small, fast proxy that makes Kimi thinking models work behind Anthropic and OpenAI clients."""

__version__ = "0.1.0"
