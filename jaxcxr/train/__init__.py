"""Training, one module per model family (pure jitted `train_step` functions), and `loop`, the loop they share."""
