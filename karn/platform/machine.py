"""The KVM platform as the kernel sees it: vCPUs for new guest threads, recycled on exit."""

from __future__ import annotations

import threading

from karn.errors import PlatformError
from karn.platform.kvm import VirtualMachine
from karn.platform.vcpu import Vcpu


class KvmMachine:
    def __init__(self, vm: VirtualMachine, max_vcpus: int = 1024) -> None:
        self.vm = vm
        self.max_vcpus = max_vcpus
        self._lock = threading.Lock()
        self._free: list[Vcpu] = []
        self._created = 0

    def new_cpu(self) -> Vcpu:
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._created >= self.max_vcpus:
                raise PlatformError(f"more than {self.max_vcpus} guest threads at once")
            index = self._created
            self._created += 1
        return Vcpu(self.vm, index)

    def release_cpu(self, cpu: Vcpu) -> None:
        with self._lock:
            self._free.append(cpu)
