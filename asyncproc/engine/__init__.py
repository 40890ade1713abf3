"""asyncproc.engine: see the package docstring of asyncproc."""
