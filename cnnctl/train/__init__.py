"""Training engine: runtime set-up, strategy, optimizers, callbacks, run directories, the loop."""
