"""Pictures: training curves, confusion matrices (and, later, what a network learned)."""
