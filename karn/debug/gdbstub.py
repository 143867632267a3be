"""`karn run --gdb [HOST:]PORT`: a GDB remote serial protocol stub inside the monitor.

All-stop mode. The guest's first thread waits for gdb before its first instruction. When
a thread stops (breakpoint, single step, a signal-raising fault, Ctrl-C in gdb) every
other thread is stopped too: running ones are kicked out of KVM_RUN and park in the
observer's `interrupted` hook; threads inside a syscall park when it returns (a thread
blocked in a host call stays there, and gdb sees its registers at the syscall).

Breakpoints are software: Z0 writes int3 (0xcc) into guest memory; the #BP trap reaches
the monitor as a GuestFault (vector 3) with rip after the int3, which the stub moves back
(reported as `swbreak`). Single-step sets RFLAGS.TF: the #DB trap (vector 1) comes back
the same way. KVM_SET_GUEST_DEBUG single-step was tried on PVM: it did not give a clean
KVM_EXIT_DEBUG (the #DB was delivered into the guest, then KVM stepped the exception
stub), and hardware breakpoints are unavailable there, so TF is used on both platforms.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.faults import BREAKPOINT, DEBUG, fault_signal
from karn.abi.registers import MASK64
from karn.abi.signals import SIGINT, SIGKILL, SIGTRAP
from karn.debug import gdbregs
from karn.debug.objects import read_auxv
from karn.debug.observe import BaseObserver
from karn.errors import UsageError
from karn.hints import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from karn.abi.faults import GuestFault
    from karn.kernel.process import Task
    from karn.run.guest import Guest

TF = 0x100
INT3 = b"\xcc"
PARK_TIMEOUT = 2.0  # how long a stop waits for running threads to leave guest mode
AT_PHDR, AT_PHNUM = 3, 5
PT_DYNAMIC, PT_PHDR = 2, 6
DT_DEBUG = 21


class GdbStub(BaseObserver):
    def __init__(self, guest: Guest, host: str, port: int) -> None:
        self.guest = guest
        self.proc = guest.process
        self.mem = guest.mem
        try:
            self.listener = socket.create_server((host, port))
        except OSError as err:
            raise UsageError(f"--gdb {host}:{port}: {err.strerror}") from None
        self.address = self.listener.getsockname()[:2]
        self.cv = threading.Condition()
        self.conn: socket.socket | None = None
        self.attached = False
        self.stopped = True  # the world; starts stopped: the guest waits for gdb
        self.event: tuple[int, int, str] | None = None  # (tid, signal, reason) being reported
        self.parked: set[int] = set()
        self.in_syscall: set[int] = set()
        self.started: set[int] = set()
        self.step_tid: int | None = None
        self.step_after_call: set[int] = set()  # tids stepped while parked at a call's entry
        self.returning: dict[int, int] = {}  # tid -> the result of the call it parks after
        # the threads a vCont resumed (None: all); the others stay parked, as vCont's
        # threads with no action do (gdb's scheduler-locking)
        self.running: set[int] | None = None
        self.resume_signal: dict[int, int] = {}
        self.breakpoints: dict[int, bytes] = {}
        self.general_tid = 0  # Hg
        self.no_ack = False
        self.server: threading.Thread | None = None
        self.exit_reported = False
        self.auxv = read_auxv(self.mem, guest.image.rsp)

    # -- observer hooks (guest threads) ---------------------------------------------------

    def thread_started(self, task: Task) -> None:
        first = not self.started
        with self.cv:
            self.started.add(task.tid)
        if first:
            self._wait_for_gdb()
            with self.cv:
                self.event = (task.tid, SIGTRAP, "")
        if self.attached and self.stopped:
            task.vcpu.kick()  # the first KVM_RUN returns at once: park with synced registers

    # A step asked of a thread parked at a call's entry or exit is taken once the call
    # returns, its result in rax: a trap flag set in the context as it stands there would
    # replace the context the call returns with (the result lost).
    def syscall_enter(self, task: Task, nr: int, args: tuple[int, ...]) -> object:
        if self.attached:
            if self._park(task):
                self.step_after_call.add(task.tid)
            with self.cv:
                self.in_syscall.add(task.tid)
        return None

    def syscall_exit(self, task: Task, nr: int, args: tuple[int, ...], result: int | None,
                     token: Any) -> None:
        if self.attached:
            with self.cv:
                self.in_syscall.discard(task.tid)
            if result is None:
                return
            self.returning[task.tid] = result & MASK64
            try:
                step = self._park(task) or task.tid in self.step_after_call
                self.step_after_call.discard(task.tid)
                if step:
                    self._trap_after_one(task)
            finally:
                del self.returning[task.tid]

    def interrupted(self, task: Task) -> None:
        # Not while it is on its way into a call (kicked in the syscall trampoline: its
        # registers are not the program's, and gdb showed the page's nearest symbol for
        # it): it goes on and parks as the call comes in (syscall_enter).
        if self.attached and task.vcpu.interruptible():
            self._park_and_step(task)

    def fault(self, task: Task, fault: GuestFault) -> bool:
        if not self.attached:
            return False
        cpu = task.vcpu
        ctx = cpu.get_context()
        if fault.vector == BREAKPOINT and fault.rip - 1 in self.breakpoints:
            ctx["rip"] = fault.rip - 1
            cpu.set_context(ctx)
            return self._stop_here(task, SIGTRAP, "swbreak:;", rewind=True)
        if fault.vector == DEBUG and ctx["rflags"] & TF and self.step_tid == task.tid:
            ctx["rflags"] &= ~TF
            cpu.set_context(ctx)
            return self._stop_here(task, SIGTRAP, "")
        sig = fault_signal(fault).signal
        cpu.set_context(ctx)  # leave the exception stub if gdb lets the thread go on
        self._stop_here(task, sig, "")
        return not self.resume_signal.pop(task.tid, 0)  # a passed signal goes to the kernel

    def finish(self) -> None:
        """The process ended: tell gdb (W/X) and give it a moment to say goodbye."""
        with self.cv:
            self.cv.notify_all()
        if self.server is not None:
            self.server.join(timeout=10)
        self.listener.close()

    # -- stopping and resuming ------------------------------------------------------------

    def _stop_here(self, task: Task, sig: int, reason: str, rewind: bool = False) -> bool:
        with self.cv:
            if self.stopped and self.event is not None and self.event[0] != task.tid:
                # Another thread's stop is being reported: this thread just parks; a
                # breakpoint it hit (rip moved back) is hit again when it resumes.
                pass
            else:
                self.event = (task.tid, sig, reason)
                self.stopped = True
                self.cv.notify_all()
        self._kick_others(task)
        self._park_and_step(task)
        return True

    def _kick_others(self, task: Task | None) -> None:
        for other in list(self.proc.tasks.values()):
            if other is not task and other.cpu is not None:
                other.cpu.kick()

    def _park(self, task: Task) -> bool:
        """Wait here while the world is stopped; whether gdb then stepped this thread."""
        tid = task.tid
        proc = self.proc
        with self.cv:
            if not self._held(tid):
                return False
            self.parked.add(tid)
            self.cv.notify_all()
            while self._held(tid) and self.attached and proc.exit_status is None:
                self.cv.wait(0.2)
            self.parked.discard(tid)
            return self.step_tid == tid

    def _context(self, task: Task) -> dict[str, int]:
        """The registers gdb sees and changes: a thread parked as its call returns has the
        call's result in rax already (the exit path loads it only once the thread goes
        on, and not at all if gdb set the registers meanwhile)."""
        ctx = task.vcpu.get_context()
        result = self.returning.get(task.tid)
        if result is not None:
            ctx["rax"] = result
        return ctx

    def _held(self, tid: int) -> bool:
        return self.stopped or self.running is not None and tid not in self.running

    def _park_and_step(self, task: Task) -> None:
        if self._park(task):
            self._trap_after_one(task)

    def _trap_after_one(self, task: Task) -> None:
        """The thread goes on from the registers gdb sees (_context) for one instruction."""
        ctx = self._context(task)
        ctx["rflags"] |= TF
        task.vcpu.set_context(ctx)

    def _all_parked(self) -> bool:
        live = set(self.proc.tasks) & self.started
        return live <= (self.parked | self.in_syscall)

    def _stop_world(self, sig: int) -> None:
        """Ctrl-C from gdb: stop every thread, report the first."""
        with self.cv:
            self.stopped = True
            tid = min(set(self.proc.tasks) & self.started, default=1)
            self.event = (tid, sig, "")
        self._kick_others(None)

    def _wait_parked(self) -> None:
        deadline = time.monotonic() + PARK_TIMEOUT
        with self.cv:
            while not self._all_parked() and self.proc.exit_status is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("gdb: some threads did not stop in time")
                    return
                self.cv.wait(left)

    def _resume(self, step_tid: int | None, signals: dict[int, int],
                running: set[int] | None = None) -> None:
        with self.cv:
            self.step_tid = step_tid
            self.resume_signal = signals
            self.running = running
            self.event = None
            self.stopped = False
            self.cv.notify_all()

    # -- the connection ---------------------------------------------------------------

    def _wait_for_gdb(self) -> None:
        host, port = self.address
        log.warning("waiting for gdb on %s:%d (target remote %s:%d)", host, port, host, port)
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = conn
        self.attached = True
        self.server = threading.Thread(target=self._serve, name="gdb-stub", daemon=True)
        self.server.start()

    def _serve(self) -> None:
        conn = self.conn
        assert conn is not None
        reader = _PacketReader(conn)
        try:
            self._wait_parked()
            while True:
                packet = reader.next_packet(self)
                if packet is None:
                    break
                if not self.no_ack:
                    conn.sendall(b"+")
                reply = self._handle(packet, reader)
                if reply is not None:
                    self._send(reply)
                if packet in (b"k", b"vKill;1") or packet.startswith(b"D"):
                    if packet.startswith(b"D"):
                        break
        except OSError:
            pass
        finally:
            self._detach()
            try:
                conn.close()
            except OSError:
                pass

    def _send(self, payload: bytes) -> None:
        assert self.conn is not None
        checksum = sum(payload) & 0xFF
        self.conn.sendall(b"$" + payload + b"#" + f"{checksum:02x}".encode())

    def _detach(self) -> None:
        for addr, original in list(self.breakpoints.items()):
            try:
                self.mem.write(addr, original)
            except SyscallError:
                pass
        self.breakpoints.clear()
        with self.cv:
            self.attached = False
            self.stopped = False
            self.running = None
            self.step_tid = None
            self.cv.notify_all()

    def _exit_packet(self) -> bytes:
        proc = self.proc
        self.exit_reported = True
        if proc.fatal_signal:
            return f"X{proc.fatal_signal:02x}".encode()
        return f"W{(proc.exit_status or 0) & 0xFF:02x}".encode()

    # -- packets --------------------------------------------------------------------------

    def _handle(self, packet: bytes, reader: _PacketReader) -> bytes | None:
        text = packet.decode("latin-1")
        head = text[:1]
        if text.startswith("qSupported"):
            return (b"PacketSize=4000;qXfer:features:read+;qXfer:auxv:read+;"
                    b"qXfer:libraries-svr4:read+;qXfer:exec-file:read+;swbreak+;"
                    b"vContSupported+;QStartNoAckMode+")
        if text == "QStartNoAckMode":
            self._send(b"OK")
            self.no_ack = True
            return None
        if text.startswith("qXfer:"):
            return self._qxfer(text)
        if text == "?":
            return self._stop_reply()
        if text == "qAttached":
            return b"0"
        if text == "qC":
            return f"QC{self._event_tid():x}".encode()
        if text == "qfThreadInfo":
            return ("m" + ",".join(f"{t:x}" for t in self._threads())).encode()
        if text == "qsThreadInfo":
            return b"l"
        if text.startswith("qThreadExtraInfo,"):
            tid = int(text.split(",")[1], 16)
            state = "in syscall" if tid in self.in_syscall else "stopped"
            return state.encode().hex().encode()
        if head == "T":
            return b"OK" if int(text[1:], 16) in self._threads() else b"E01"
        if head == "H":
            tid = int(text[2:], 16) if text[2:] not in ("-1", "0") else 0
            if text[1] == "g":
                self.general_tid = tid
            return b"OK"
        if head == "g":
            return self._read_registers(self._task()).hex().encode()
        if head == "p":
            return self._read_register(int(text[1:], 16))
        if head == "P":
            number, value = text[1:].split("=")
            return self._write_register(int(number, 16), bytes.fromhex(value))
        if head == "G":
            return self._write_all(bytes.fromhex(text[1:]))
        if head == "m":
            addr, length = (int(x, 16) for x in text[1:].split(","))
            data = self._read_memory(addr, min(length, 0x4000))
            return b"E14" if data is None else data.hex().encode()
        if head == "M":
            where, hexdata = text[1:].split(":")
            start, count = (int(x, 16) for x in where.split(","))
            return self._write_memory(start, bytes.fromhex(hexdata)[:count])
        if head in ("Z", "z"):
            kind, place, _ = text[1:].split(",")
            if kind != "0":
                return b""  # hardware breakpoints and watchpoints: not on this platform
            return self._breakpoint(int(place, 16), insert=head == "Z")
        if text == "vCont?":
            return b"vCont;c;C;s;S"
        if text.startswith("vCont;"):
            return self._vcont(text[6:], reader)
        if head in ("c", "C", "s", "S"):
            sig = int(text[1:3], 16) if head in ("C", "S") and len(text) >= 3 else 0
            tid = self._event_tid()
            step = tid if head in ("s", "S") else None
            return self._continue(step, {tid: sig} if sig else {}, reader)
        if head == "k" or text.startswith("vKill"):
            self._kill()
            return b"OK" if text.startswith("vKill") else None
        if head == "D":
            self._send(b"OK")
            return None
        if text.startswith("qSymbol"):
            return b"OK"
        return b""

    def _qxfer(self, text: str) -> bytes:
        parts = text.split(":")
        if len(parts) < 5 or parts[2] != "read":
            return b""
        obj, annex = parts[1], parts[3]
        offset, length = (int(x, 16) for x in parts[4].split(","))
        if obj == "features" and annex == "target.xml":
            data = gdbregs.TARGET_XML.encode()
        elif obj == "auxv":
            data = self.auxv
        elif obj == "libraries-svr4":
            data = self._library_list().encode()
        elif obj == "exec-file":
            data = (self.guest.host_path(self.guest.manifest.entry) or "").encode()
        else:
            return b""
        chunk = data[offset:offset + length]
        return (b"l" if offset + length >= len(data) else b"m") + _escape(chunk)

    def _stop_reply(self) -> bytes:
        if self.proc.done.is_set() and self.proc.exit_status is not None:
            return self._exit_packet()
        # gdb takes the reported thread as the current one from here (as gdbserver
        # does): an Hg from before must not make its next `g` read another thread's
        self.general_tid = 0
        tid, sig, reason = self.event or (self._event_tid(), SIGTRAP, "")
        return f"T{sig:02x}{reason}thread:{tid:x};".encode()

    def _continue(self, step: int | None, signals: dict[int, int],
                  reader: _PacketReader, running: set[int] | None = None) -> bytes | None:
        if self.proc.done.is_set():
            return self._exit_packet()
        self._resume(step, signals, running)
        while True:  # until a thread stops, gdb interrupts, or the process ends
            with self.cv:
                self.cv.wait_for(lambda: self.event is not None or self.proc.done.is_set(),
                                 timeout=0.05)
                event = self.event
            if event is not None:
                self._wait_parked()
                return self._stop_reply()
            if self.proc.done.is_set():
                return self._exit_packet()
            if reader.interrupt_pending():
                self._stop_world(SIGINT)

    def _vcont(self, actions: str, reader: _PacketReader) -> bytes | None:
        step = None
        signals: dict[int, int] = {}
        running: set[int] | None = set()
        for action in actions.split(";"):
            verb, _, thread = action.partition(":")
            tid = int(thread, 16) if thread and thread != "-1" else None
            sig = int(verb[1:3], 16) if verb[:1] in ("C", "S") else 0
            target = tid if tid is not None else self._event_tid()
            if verb[:1] in ("s", "S") and step is None:
                step = target
            if sig:
                signals[target] = sig
            if tid is None:
                running = None  # an action for every thread without one of its own
            elif running is not None:
                running.add(tid)
        return self._continue(step, signals, reader, running)

    def _kill(self) -> None:
        proc = self.proc
        proc.terminate_by_signal(SIGKILL, core=False)
        self._detach()

    # -- threads and registers ------------------------------------------------------------

    def _threads(self) -> list[int]:
        return sorted(set(self.proc.tasks) & self.started)

    def _event_tid(self) -> int:
        if self.event is not None:
            return self.event[0]
        threads = self._threads()
        return threads[0] if threads else 1

    def _task(self) -> Task | None:
        tid = self.general_tid or self._event_tid()
        return self.proc.tasks.get(tid)

    def _read_registers(self, task: Task | None) -> bytes:
        if task is None or task.cpu is None:
            return bytes(sum(size for _, size in gdbregs.OFFSETS))
        cpu = task.cpu
        ctx = self._context(task)
        if task.tid in self.in_syscall:
            ctx["orig_rax"] = ctx["rax"]
        return gdbregs.encode(ctx, cpu.get_fs_base(), cpu.get_gs_base(), cpu.get_fpu())

    def _read_register(self, number: int) -> bytes:
        if number >= len(gdbregs.OFFSETS):
            return b"E45"
        offset, size = gdbregs.OFFSETS[number]
        return self._read_registers(self._task())[offset:offset + size].hex().encode()

    def _write_register(self, number: int, value: bytes) -> bytes:
        task = self._task()
        if task is None or task.cpu is None or number >= len(gdbregs.REGISTERS):
            return b"E45"
        name = gdbregs.REGISTERS[number][0]
        n = int.from_bytes(value, "little")
        cpu = task.cpu
        ctx = self._context(task)
        if name in ctx and name != "rflags":
            ctx[name] = n
        elif name == "eflags":
            ctx["rflags"] = n
        elif name == "fs_base":
            cpu.set_fs_base(n)
            return b"OK"
        elif name == "gs_base":
            cpu.set_gs_base(n)
            return b"OK"
        else:
            return b"OK"  # x87/SSE/segment writes are accepted and ignored
        cpu.set_context(ctx)
        return b"OK"

    def _write_all(self, data: bytes) -> bytes:
        for number, (offset, size) in enumerate(gdbregs.OFFSETS[:18]):
            self._write_register(number, data[offset:offset + size])
        return b"OK"

    # -- memory and breakpoints -----------------------------------------------------------

    def _read_memory(self, addr: int, length: int) -> bytes | None:
        try:
            data = bytearray(self.mem.read(addr, length))
        except (SyscallError, ValueError, OverflowError):
            return None
        for bp, original in self.breakpoints.items():  # show what gdb wrote, not our int3
            if addr <= bp < addr + length:
                data[bp - addr] = original[0]
        return bytes(data)

    def _write_memory(self, addr: int, data: bytes) -> bytes:
        patched = bytearray(data)
        for bp in self.breakpoints:
            if addr <= bp < addr + len(data):
                self.breakpoints[bp] = bytes([data[bp - addr]])
                patched[bp - addr] = INT3[0]
        try:
            self.mem.write(addr, bytes(patched))
        except (SyscallError, ValueError, OverflowError):
            return b"E14"
        return b"OK"

    def _breakpoint(self, addr: int, insert: bool) -> bytes:
        try:
            if insert:
                if addr not in self.breakpoints:
                    original = self.mem.read(addr, 1)
                    self.mem.write(addr, INT3)
                    self.breakpoints[addr] = original
            elif addr in self.breakpoints:
                self.mem.write(addr, self.breakpoints.pop(addr))
        except (SyscallError, ValueError, OverflowError):
            return b"E14"
        return b"OK"

    # -- what gdb asks about the process --------------------------------------------------

    def _auxv_value(self, key: int) -> int:
        for k, v in struct.iter_unpack("<QQ", self.auxv[: len(self.auxv) // 16 * 16]):
            if k == key:
                return v
        return 0

    def _r_debug(self) -> int:
        """The dynamic linker's r_debug, from DT_DEBUG in the program's dynamic section."""
        mem = self.mem
        phdr, phnum = self._auxv_value(AT_PHDR), self._auxv_value(AT_PHNUM)
        if not phdr:
            return 0
        headers = [struct.unpack_from("<IIQQQQQQ", mem.read(phdr + 56 * i, 56))
                   for i in range(phnum)]
        bias = next((phdr - h[3] for h in headers if h[0] == PT_PHDR), 0)
        dynamic = next((h[3] + bias for h in headers if h[0] == PT_DYNAMIC), 0)
        if not dynamic:
            return 0
        for i in range(512):
            tag, value = struct.unpack("<qQ", mem.read(dynamic + 16 * i, 16))
            if tag == 0:
                return 0
            if tag == DT_DEBUG:
                return value
        return 0

    def _library_list(self) -> str:
        try:
            r_debug = self._r_debug()
            lm = self.mem.read_u64(r_debug + 8) if r_debug else 0
        except SyscallError:
            lm = 0
        if not lm:
            return '<library-list-svr4 version="1.0"/>'
        parts = [f'<library-list-svr4 version="1.0" main-lm="{lm:#x}">']
        seen = 0
        lm = self.mem.read_u64(lm + 24)  # the first entry is the program itself
        while lm and seen < 512:
            l_addr, l_name, l_ld, l_next = struct.unpack("<4Q", self.mem.read(lm, 32))
            name = self.mem.read_cstring(l_name).decode(errors="replace") if l_name else ""
            if name:
                name = _xml_attr(name)
                parts.append(f'<library name="{name}" lm="{lm:#x}" l_addr="{l_addr:#x}" '
                             f'l_ld="{l_ld:#x}" lmid="0x0"/>')
            lm = l_next
            seen += 1
        parts.append("</library-list-svr4>")
        return "".join(parts)


class _PacketReader:
    """Reads `$payload#cs` packets (and the out-of-band Ctrl-C byte) from gdb."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = bytearray()
        self._interrupt = False

    def _fill(self, timeout: float | None) -> bool:
        self.conn.settimeout(timeout)
        try:
            data = self.conn.recv(65536)
        except TimeoutError:
            return True
        except BlockingIOError:
            return True
        if not data:
            return False
        self.buffer += data
        return True

    def interrupt_pending(self) -> bool:
        if not self._fill(0.0):
            raise OSError("gdb went away")
        if b"\x03" in self.buffer:
            del self.buffer[self.buffer.index(b"\x03")]
            return True
        return False

    def next_packet(self, stub: GdbStub) -> bytes | None:
        while True:
            while self.buffer[:1] in (b"+", b"-", b"\x03"):
                del self.buffer[:1]
            start = self.buffer.find(b"$")
            end = self.buffer.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buffer) >= end + 3:
                payload = bytes(self.buffer[start + 1:end])
                del self.buffer[: end + 3]
                return _unescape(payload)
            if not self._fill(None):
                return None


def _escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in (0x23, 0x24, 0x7D, 0x2A):
            out += bytes([0x7D, b ^ 0x20])
        else:
            out.append(b)
    return bytes(out)


def _unescape(data: bytes) -> bytes:
    if b"}" not in data:
        return data
    out = bytearray()
    it = iter(data)
    for b in it:
        out.append(next(it) ^ 0x20 if b == 0x7D else b)
    return bytes(out)


def _xml_attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace(">", "&gt;"))

