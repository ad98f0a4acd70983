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
    from alter.models.tiny import TinyConfig, build_tiny
    from alter.training.finetune import corpus_texts

    config = TinyConfig(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
    return build_tiny(corpus_texts(str(small_world)), seed=0, config=config)


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
    """Attaches an ALTER adapter with random heads and routers to a model (so routing changes its outputs)."""
    from alter.adapters.asymmetric import AsymmetricConfig, adapter_layers
    from alter.adapters.runtime import EntropySettings, attach, shared_router_from

    def make(model, seed: int, router: str = "layer", rank: int = 8):
        runtime = attach(model, AsymmetricConfig(rank=rank, forget_heads=2, router=router), EntropySettings(threshold=0.5))
        torch.manual_seed(seed)
        with torch.no_grad():
            for _, layer in adapter_layers(model):
                layer.forget_B.normal_(std=0.05)
                layer.retain_B.normal_(std=0.05)
                layer.router.normal_()
        if router == "shared":
            hidden = model.config.hidden_size
            runtime.shared_router = shared_router_from(torch.randn(3, hidden), torch.randn(3))
        return runtime

    return make
