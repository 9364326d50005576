"""Built-in aitk plugin: visual defect detection (PatchCore-style anomaly maps on a timm backbone)."""
