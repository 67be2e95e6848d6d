"""The model: the diffusion model a run trains (the default tiny UNet, a local diffusers folder) and its training loss."""
