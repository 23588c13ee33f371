"""One module per backend behind adapters.base.Backend; loaded lazily by harness.registry."""
