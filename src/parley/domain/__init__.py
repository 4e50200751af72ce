"""Goals, conversations and escalations: plain services and typed errors.

Import the services from their modules (``parley.domain.goals``, ...); this package
stays import-light because the store depends on the domain's entities.
"""
