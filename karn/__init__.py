"""karn: run unmodified Linux programs as KVM unikernels."""

__version__ = "0.1.0"
