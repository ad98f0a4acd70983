"""Data: TOFU-format loading and validation, the synthetic world generator, prompt formatting."""

from alter.data.formatting import IGNORE_INDEX, EncodedQA, encode_prompt, encode_qa
from alter.data.tofu import TofuData
from alter.data.world import WorldSpec, build_world, write_world

__all__ = ["IGNORE_INDEX", "EncodedQA", "encode_prompt", "encode_qa", "TofuData", "WorldSpec", "build_world", "write_world"]
