"""One module per backend behind migbench.contracts.Backend; loaded lazily by migbench.registry."""
