"""edgeclf.train."""
