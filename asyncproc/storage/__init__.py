"""asyncproc.storage: see the package docstring of asyncproc."""
