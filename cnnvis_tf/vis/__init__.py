"""Visualizations of CNNs: one module per method family; numbers separate from plots."""
