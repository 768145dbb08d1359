"""edgeclf.data."""
