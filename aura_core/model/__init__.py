"""Models: architecture and units, loading and presets, devices, precision, packed products, row attention."""
