"""Machinery shared by every upstream family."""
