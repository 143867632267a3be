"""karn/abi against this machine's C headers and Linux kernel.

The guest's numbers must be Linux's: signal numbers, si_codes and errno values are
printed by a C program generated from the table's own names (a wrong or missing number
fails), syscall numbers are compared with every __NR_ the headers define, and the fault
table with the signal, si_code and si_addr the native kernel gives for the same exceptions.
"""

from __future__ import annotations

import errno
import re
import subprocess

import pytest
from helpers import compile_c, source_file

from karn.abi import signals
from karn.abi.faults import (
    BREAKPOINT,
    PAGE_FAULT,
    PF_FETCH,
    PF_PRESENT,
    PF_WRITE,
    GuestFault,
    fault_signal,
)
from karn.abi.syscalls import SYSCALL_NAMES, SYSCALL_NUMBERS

PF_USER = 4  # the CPU sets it for every fault at CPL3


def c_values(names: list[str], headers: list[str]) -> dict[str, int]:
    """What C says each macro is on this machine (names it does not define are left out)."""
    lines = ["#define _GNU_SOURCE", *(f"#include <{h}>" for h in ["stdio.h", *headers])]
    lines.append("int main(void)\n{")
    for name in names:
        lines += [f"#ifdef {name}", f'    printf("{name} %ld\\n", (long)({name}));', "#endif"]
    lines += ["    return 0;", "}"]
    source = source_file("abi_values.c", "\n".join(lines) + "\n")
    exe = compile_c(source, f"abi-values-{source.parent.name}", "gcc", ("-O0",))
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def test_signal_numbers_and_names_are_linux():
    ours = {name: number for number, name in signals.SIGNAL_NAMES.items()}
    assert sorted(signals.SIGNAL_NAMES) == list(range(1, signals.SIGRTMIN))
    c = c_values([*ours, "__SIGRTMIN", "__SIGRTMAX"], ["signal.h"])
    assert c.pop("__SIGRTMIN") == signals.SIGRTMIN
    assert c.pop("__SIGRTMAX") == signals.NSIG
    assert c == ours
    for name, number in ours.items():
        assert getattr(signals, name) == number
        assert signals.signal_name(number) == name


def test_si_codes_are_linux():
    prefixes = ("SI_", "SEGV_", "ILL_", "FPE_", "BUS_", "TRAP_")
    ours = {name: getattr(signals, name) for name in dir(signals) if name.startswith(prefixes)}
    assert len(ours) >= 10
    assert c_values(list(ours), ["signal.h"]) == ours


def c_syscall_numbers() -> dict[str, int]:
    """Every __NR_ the C headers define: name -> number."""
    out = subprocess.run(["gcc", "-dM", "-E", "-"], input="#include <sys/syscall.h>\n",
                         capture_output=True, text=True, check=True).stdout
    found = re.findall(r"^#define __NR_(\w+) (\d+)$", out, re.MULTILINE)
    return {name: int(nr) for name, nr in found}


def test_syscall_numbers_are_linux():
    c = c_syscall_numbers()
    assert len(c) > 300
    # One of the two may be newer: compare the numbers both know of.
    last = min(max(c.values()), max(SYSCALL_NAMES))
    assert {n: nr for n, nr in SYSCALL_NUMBERS.items() if nr <= last} == {
        n: nr for n, nr in c.items() if nr <= last
    }
    assert all(SYSCALL_NAMES[nr] == name for name, nr in SYSCALL_NUMBERS.items())


def test_host_errno_is_linux():
    """karn/abi/errno.py takes errno values from Python's errno module: it must be C's."""
    ours = {name: value for value, name in errno.errorcode.items()}
    c = c_values(list(ours), ["errno.h"])
    assert len(c) > 100
    assert c == {name: ours[name] for name in c}


# case of tests/programs/abi_faults.c -> the exception the CPU raises for it
EXCEPTIONS = {
    "divide": (0, None),
    "ud2": (6, None),
    "int3": (BREAKPOINT, None),
    "unmapped-read": (PAGE_FAULT, PF_USER),
    "unmapped-write": (PAGE_FAULT, PF_USER | PF_WRITE),
    "unmapped-exec": (PAGE_FAULT, PF_USER | PF_FETCH),
    "readonly-write": (PAGE_FAULT, PF_USER | PF_WRITE | PF_PRESENT),
    "non-canonical": (13, 0),
}


@pytest.fixture(scope="module")
def native_faults(build) -> dict[str, tuple[int, int, str]]:
    out = subprocess.run([str(build("abi_faults"))], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    faults = {}
    for line in out.splitlines():
        case, _, signo, _, code, _, where = line.split()
        faults[case] = (int(signo), int(code), where)
    return faults


@pytest.mark.parametrize("case", EXCEPTIONS)
def test_fault_table_is_what_linux_raises(case, native_faults):
    vector, error_code = EXCEPTIONS[case]
    insn, data = 0x401000, 0x7000
    fault = GuestFault(vector, error_code, rip=insn, rsp=0x7FF000, rflags=0x202,
                       cr2=data if vector == PAGE_FAULT else 0, regs={}, fs_base=0)
    got = fault_signal(fault)
    where = {0: "zero", insn: "insn", data: "data"}.get(got.si_addr, "other")
    assert (got.signal, got.si_code, where) == native_faults[case]
