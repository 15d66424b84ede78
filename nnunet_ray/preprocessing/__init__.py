"""preprocessing stage."""
