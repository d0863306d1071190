"""Volumes -> slices -> a prepared dataset; and the simulated cohort."""
