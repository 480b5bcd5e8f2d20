"""Demo and benchmark support: a synthetic population, worker processes, the `demo run` story."""
