"""`royalty train` (placeholder until the engine lands)."""
