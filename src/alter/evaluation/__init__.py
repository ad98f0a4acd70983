"""Evaluation: the expensive passes (scoring, generation, multiple choice) in `runner`, the registry of suites in
`suites`, the out-of-sample probes."""
