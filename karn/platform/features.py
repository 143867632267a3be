"""What a platform tells the loader about its CPU (a plain record, platform-neutral)."""

from __future__ import annotations

from karn.hints import NamedTuple


class CpuFeatures(NamedTuple):
    hwcap: int  # CPUID.1:EDX, as Linux reports in AT_HWCAP
    hwcap2: int
    xsave_size: int  # bytes of XSAVE state for the enabled XCR0 features
