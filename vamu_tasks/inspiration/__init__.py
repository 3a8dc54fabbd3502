"""inspiration."""
