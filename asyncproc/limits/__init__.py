"""asyncproc.limits: the gates (rate, fixed and adaptive concurrency) calls pass."""
