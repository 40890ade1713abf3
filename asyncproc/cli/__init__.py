"""asyncproc.cli: see the package docstring of asyncproc."""
