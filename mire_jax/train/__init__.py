"""Training: the jitted step (step.py), the loop (loop.py), its config schema (config.py), the optimizer
(optim.py), orbax checkpoints (checkpoint.py), logs and curves (metrics_log.py, plot.py)."""
