"""Dataset fingerprint -> plans (crop, normalisation, configurations, network)."""
