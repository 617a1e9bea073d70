"""One module per integration. Each holds only what is specific to its backend."""
