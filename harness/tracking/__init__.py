"""MLflow plumbing in three jobs: `store` (the tracking store, phase runs, the cache lookup, batched
logging), `provenance` (code fingerprints, package hash, versions) and `codecs` (artifacts)."""
