"""The engine: per-layer rules, capture hooks, the three dot-product paths and Hessian-vector products that value one optimizer step. No diffusers import."""
