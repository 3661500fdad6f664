"""Reference implementations for tests and benchmarks (oracles.py): slow, obviously-correct loops over
experts that the vectorised adapters in talklora_hub.modeling must agree with."""
