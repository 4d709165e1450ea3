"""pipeline package of STARS."""
