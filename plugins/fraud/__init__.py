"""Built-in aitk plugin: fraud detection on transaction tables."""
