"""Pipelines above the library: an unlearning run with its token records, the bench, the demo. They call library
functions; where a step needs a fresh process (clean memory figures), `isolated.run_isolated` starts one on a
library entry point."""
