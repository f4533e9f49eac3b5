"""Python client for the anytime service; imports neither ``model`` nor ``service``."""
