"""DITS: influence-guided selection of preference pairs (arXiv 2502.00955)."""
