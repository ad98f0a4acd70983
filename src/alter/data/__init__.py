"""Data: TOFU-format loading and validation, the user's own files, the synthetic world generators, prompt
formatting, batching."""
