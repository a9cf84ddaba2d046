"""Expert parallelism (notebook 06): the expert-parallel layer, its msrun worker and command line, and a
large-scale simulator."""
