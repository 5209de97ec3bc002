"""What the suites share: models, timing, the roofline, sizes, the two sides of a rate."""
