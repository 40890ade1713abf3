"""asyncproc.processes: see the package docstring of asyncproc."""
