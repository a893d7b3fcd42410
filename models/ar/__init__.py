"""The AR adapter over transformers causal LMs, its loader and its KV caches."""
