"""The shared training loop, fine-tuning, unlearning runs (any method's phases), recipes and run manifests."""
