"""After training: values for new targets (replay, checkpoints), generating images, reading a finished run back."""
