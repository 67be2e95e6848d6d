"""The audit: in-run values against retraining Shapley (exact or sampled games), and how well they agree."""
