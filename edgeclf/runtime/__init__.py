"""edgeclf.runtime."""
