"""Utilities that are not layers: gradient checking."""
