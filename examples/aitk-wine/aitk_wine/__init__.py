"""aitk plugin: the `wine` use case."""
