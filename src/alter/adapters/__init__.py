"""Adapters: ALTER's asymmetric LoRA (shared A, per-sub-domain forget heads, a retain head, an entropy-aware
router) and the runtime that routes, saves and loads it."""
