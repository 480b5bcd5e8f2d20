"""Read models: one pure fold per projection, plus the registration the I/O shell uses."""
