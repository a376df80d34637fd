"""Service handlers: thin adapters from wire requests to the store and actors."""
