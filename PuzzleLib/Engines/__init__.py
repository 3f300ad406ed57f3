"""Compute engines. Each knows plain arrays only, never Modules."""
