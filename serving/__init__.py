"""serving package of STARS."""
