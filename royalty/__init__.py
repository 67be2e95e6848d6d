"""royalty: pay copyright owners for what a diffusion model learned from their work."""
__version__ = "0.1.0"
