"""Parley: goal-driven LLM conversations, instrumented for production from day one."""

__version__ = "0.1.0"
