"""The shared training loop, fine-tuning recipes, and cost accounting."""
