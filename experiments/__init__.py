"""Entry points (run, evaluate, plot, train) and what they share: the run schema and config
checks, tasks and corpora, metrics, the run-directory store, loggers and process groups."""
