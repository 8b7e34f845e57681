"""`firespotter bench`: latency percentiles, throughput per batch size and memory (issue 6)."""
