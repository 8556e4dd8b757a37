"""tailwise."""
