"""The built-in aitk plugins; each registers through the "aitk" entry-point group like any other."""
