"""What nnfit reads and writes on disk: run directory layout, locks and validation of loaded state."""
