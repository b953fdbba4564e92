"""Region features: the HDF5 feature store, its writer and the one read path (the extractors are in `extraction`)."""
