"""loading stage."""
