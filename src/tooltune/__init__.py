"""tooltune: fine-tune open LLMs into tool-calling dialogue bots, and measure how well they do it."""

__version__ = "0.1.0"
