"""Region features: the HDF5 feature store and the extractors that write it."""
