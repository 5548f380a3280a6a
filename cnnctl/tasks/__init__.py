"""Tasks: what a model is trained to do (loss, metrics, train_step where it differs)."""
