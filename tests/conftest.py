import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOFU_DIR = SHARED_DATA / "tofu"


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    if not TOFU_DIR.is_dir():
        pytest.fail(f"shared TOFU data not found at {TOFU_DIR}")
    return TOFU_DIR


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A 10-author synthetic world (200 QA), written once per session."""
    from alter.data.world import WorldSpec, write_world

    out = tmp_path_factory.mktemp("world10")
    write_world(WorldSpec(authors=10, seed=3), out)
    return out


@pytest.fixture(scope="session")
def tiny_pair(small_world):
    """A small freshly initialised tiny model and its tokenizer, trained on the small world's text."""
    from alter.data.tofu import TofuData
    from alter.models.tiny import TinyConfig, build_tiny

    config = TinyConfig(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
    return build_tiny(TofuData(str(small_world)).texts(), seed=0, config=config)


@pytest.fixture(scope="session")
def smollm2():
    from alter.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def tiny_runs(small_world, tmp_path_factory):
    """Tiny target (on full) and retain (on retain90) models of the small world, briefly fine-tuned."""
    from dataclasses import replace

    from alter.training.finetune import default_recipe, finetune

    root = tmp_path_factory.mktemp("tiny-runs")
    recipe = default_recipe("tiny", lora=False)
    recipe = replace(recipe, train=replace(recipe.train, epochs=6, precision="fp32"))
    for name, split in (("target", "full"), ("retain", "retain90")):
        finetune("tiny", str(small_world), split, str(root / name), recipe)
    return root


@pytest.fixture(scope="session")
def random_alter_adapter():
    """Attaches an ALTER adapter with random heads, routers and gate to a model (so routing changes its outputs)."""
    from alter.adapters.config import AlterConfig
    from alter.adapters.model import AlterModel
    from alter.entropy import EntropySettings

    def make(model, seed: int, router: str = "layer", rank: int = 8, gate_bias: float = 0.0,
             adapt_below_gate: bool = False, gate_parts: int = 1, name_patterns: list | None = None):
        # gate_layer 1: the gate biases the tests pass were chosen for that layer's state (partial firing)
        if router == "names" and name_patterns is None:
            name_patterns = [[0, 1]]  # the "name" of two token ids: a sequence holds it or not
        config = AlterConfig(rank=rank, forget_heads=2, router=router, gate_layer=1, gate_parts=gate_parts,
                             adapt_below_gate=adapt_below_gate, entropy=EntropySettings(threshold=0.5),
                             name_patterns=name_patterns or [])
        adapter = AlterModel(model, config)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, layer in adapter.layers:
                layer.forget_B.copy_(torch.randn(layer.forget_B.shape, generator=generator) * 0.05)
                layer.retain_B.copy_(torch.randn(layer.retain_B.shape, generator=generator) * 0.05)
                if layer.router is not None:
                    layer.router.copy_(torch.randn(layer.router.shape, generator=generator))
            if adapter.gate is not None:
                for parameter in adapter.gate.parameters():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator))
                if router == "content":
                    adapter.gate.detector.bias.fill_(gate_bias)
        return adapter

    return make


@pytest.fixture(scope="session")
def trimmed():
    """Trims each part of a training batch (its dict values) to the longest of its rows: the batch as it was
    before widths were rounded up to `WIDTH_MULTIPLE`."""

    def trim(batch: dict) -> dict:
        def part(rows: dict) -> dict:
            width = int(rows["attention_mask"].sum(1).max())
            return {key: value[:, :width] for key, value in rows.items()}

        return {key: part(value) if isinstance(value, dict) else value for key, value in batch.items()}

    return trim
