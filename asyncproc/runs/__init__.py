"""asyncproc.runs: see the package docstring of asyncproc."""
