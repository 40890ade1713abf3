"""asyncproc.keyed: see the package docstring of asyncproc."""
