"""Provider route modules of the sandbox, one per provider; see ``taos_persona.sandbox.app``."""
