"""Stage 2: the trace contract and the data-quality rules that accept or quarantine each trace."""
