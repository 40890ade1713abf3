"""asyncproc.processors: loading a user's processor; the built-in ones (HTTP too)."""
