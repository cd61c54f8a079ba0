"""Training: losses and assigner, anchors, hyperparameters, optimizer and schedule, DDP context, TensorBoard."""
