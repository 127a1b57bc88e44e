"""Studies of proxies over search spaces: scoring with an on-disk cache, correlations, reports."""
