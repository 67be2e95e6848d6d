"""Data: the owner-tagged image folders and targets, validated, and the one pixel pipeline that turns files into model input."""
