"""Partitioned systems: several unikernels joined by ports, diodes and guards (docs/systems.md)."""
