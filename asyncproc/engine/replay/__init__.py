"""asyncproc.engine.replay: `--retry-failed`, a finished run's dead letters run again."""
