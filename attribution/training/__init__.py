"""Training: the run's configuration, the trajectory (warm-up, valued steps), devices and processes, checkpoints, and the values table it writes."""
