"""Adapters: ALTER's asymmetric LoRA in peft's shape (`config`, `layer`, `model`, the whole-model `gates`), plain
peft LoRA for the baselines, and loading a model with either on top."""
