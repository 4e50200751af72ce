"""Goals, conversations, turns and escalations: plain services and typed errors.

The domain declares the ports it needs (``parley.domain.ports``); ``parley.store`` and
the LLM gateway implement them, so the domain imports neither the store nor any driver.
Import the services from their modules (``parley.domain.conversations``, ...).
"""
