"""asyncproc.bench: see the package docstring of asyncproc."""
