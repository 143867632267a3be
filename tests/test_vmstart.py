"""The VM made in a thread beside the rest of the build (karn/run/vmstart.py): its
errors reach the caller as if it had been made in place, and a failed build closes it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from karn.errors import PlatformError
from karn.run.vmstart import PendingVm


def test_an_error_making_the_vm_is_raised_by_result(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KARN_KVM_DEVICE", str(tmp_path / "no-kvm"))
    pending = PendingVm(512 << 20)
    with pytest.raises(PlatformError, match="no-kvm not found: KVM is not available"):
        pending.result()
    pending.discard()  # nothing was made: nothing to close


def test_discard_closes_a_vm_never_handed_out() -> None:
    pending = PendingVm(512 << 20)
    pending.discard()
    assert not any(t.name == "karn-vm-setup" for t in threading.enumerate())
    vm = pending._vm
    assert vm is not None
    with pytest.raises(OSError):
        os.fstat(vm.fd)


def test_result_is_the_vm_and_discard_then_leaves_it_open() -> None:
    pending = PendingVm(512 << 20)
    vm = pending.result()
    # the thread has left the kernel too: the sandbox signals every task it finds there
    assert not os.path.exists(f"/proc/self/task/{pending._thread.native_id}")
    pending.discard()
    os.fstat(vm.fd)  # still the caller's
    vm.close()
