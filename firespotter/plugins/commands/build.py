"""`firespotter build`: an artifact for a model, backend and precision, through the cache (issue 6)."""
