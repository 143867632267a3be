"""MIL-STD-1553B words and messages.

A command word (16 bits, MSB first): RT address (5), transmit/receive (1: the RT
transmits), subaddress or mode (5; 0 and 31 mean a mode code), word count or mode code
(5; a word count of 0 means 32). A status word: RT address (5), message error, then
instrumentation, service request, 3 reserved bits, broadcast command received, busy,
subsystem flag, dynamic bus control acceptance, terminal flag. RT address 31 is broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BROADCAST = 31

# Mode codes (word-count field when the subaddress is 0 or 31).
MODE_DYNAMIC_BUS_CONTROL = 0
MODE_SYNCHRONIZE = 1
MODE_TRANSMIT_STATUS = 2
MODE_INITIATE_SELF_TEST = 3
MODE_TRANSMITTER_SHUTDOWN = 4
MODE_OVERRIDE_TRANSMITTER_SHUTDOWN = 5
MODE_RESET_RT = 8
MODE_TRANSMIT_VECTOR = 16
MODE_SYNCHRONIZE_WITH_DATA = 17
MODE_TRANSMIT_BIT = 19
MODE_SELECTED_TRANSMITTER_SHUTDOWN = 20

# Status word bits.
STATUS_MESSAGE_ERROR = 1 << 10
STATUS_SERVICE_REQUEST = 1 << 8
STATUS_BROADCAST_RECEIVED = 1 << 4
STATUS_BUSY = 1 << 3
STATUS_SUBSYSTEM_FLAG = 1 << 2
STATUS_DYNAMIC_BUS_ACCEPT = 1 << 1
STATUS_TERMINAL_FLAG = 1

# Message formats.
BC_RT, RT_BC, RT_RT, BROADCAST_RX, MODE, BROADCAST_MODE = (
    "bc-rt", "rt-bc", "rt-rt", "broadcast", "mode", "broadcast-mode")


def command_word(rt: int, transmit: bool, subaddress: int, count: int) -> int:
    """count: data words (1..32) for data messages, the mode code for mode commands."""
    if not (0 <= rt < 32 and 0 <= subaddress < 32 and 0 <= count <= 32):
        raise ValueError(f"command word field out of range: {rt} {subaddress} {count}")
    return (rt << 11) | (int(transmit) << 10) | (subaddress << 5) | (count & 31)


@dataclass(frozen=True)
class Command:
    rt: int
    transmit: bool
    subaddress: int
    count: int  # the word-count field as coded (0..31)

    @classmethod
    def decode(cls, word: int) -> Command:
        return cls((word >> 11) & 31, bool(word >> 10 & 1), (word >> 5) & 31, word & 31)

    @property
    def is_mode(self) -> bool:
        return self.subaddress in (0, 31)

    @property
    def words(self) -> int:
        """Data words this command moves (a mode code with a data word moves one)."""
        if self.is_mode:
            return 1 if self.count >= 16 else 0
        return self.count or 32


def status_word(rt: int, flags: int = 0) -> int:
    return (rt << 11) | (flags & 0x7FF)


@dataclass
class Message:
    """One bus transaction as a recorder sees it.

    words: the transaction's words in the order they crossed the bus (Chapter 10's
    order): commands, then status and data as the format puts them.
    """

    time: float  # seconds since the start of the recording
    bus: str  # "A" or "B"
    kind: str  # one of the formats above
    words: list[int]
    gap1: int = 40  # response time to the first status word, tenths of a microsecond
    gap2: int = 0  # RT-RT: to the second status word
    timeout: bool = False  # no status word came back
    label: str = "normal"  # ground truth: normal, or the attack that made it
    extra: dict = field(default_factory=dict)

    @property
    def command(self) -> Command:
        return Command.decode(self.words[0])

    @property
    def key(self) -> str:
        """The message type: the commands' RT/T-R/subaddress(/mode code) as text."""
        cmds = [self.command]
        if self.kind == RT_RT:
            cmds.append(Command.decode(self.words[1]))
        parts = []
        for c in cmds:
            tail = f"m{c.count}" if c.is_mode else f"{c.subaddress}"
            parts.append(f"{c.rt}{'T' if c.transmit else 'R'}{tail}")
        return "-".join(parts)

    @property
    def data(self) -> list[int]:
        """The data words."""
        w = self.words
        if self.timeout:
            return []
        if self.kind == RT_RT:
            return w[3:-1]
        if self.kind in (BC_RT,):
            return w[1:-1]
        if self.kind == RT_BC:
            return w[2:]
        if self.kind == BROADCAST_RX:
            return w[1:]
        if self.kind == MODE:
            return w[2:] if self.command.transmit else w[1:-1]
        return w[1:]  # broadcast mode code with a data word

    @property
    def sources(self) -> list[int]:
        """RT addresses whose words this message carries (who could have spoofed it)."""
        if self.kind == RT_RT:
            return [Command.decode(self.words[1]).rt]
        if self.kind in (RT_BC,) or (self.kind == MODE and self.command.transmit):
            return [self.command.rt]
        return []


def build(time: float, bus: str, kind: str, rt: int, subaddress: int, data: list[int],
          *, rt2: int = 0, subaddress2: int = 0, mode_code: int = 0,
          status_flags: int = 0, label: str = "normal") -> Message:
    """Assemble a transaction's words in bus order from its parts."""
    n = len(data)
    if kind == BC_RT:
        words = [command_word(rt, False, subaddress, n), *data, status_word(rt, status_flags)]
    elif kind == RT_BC:
        words = [command_word(rt, True, subaddress, n), status_word(rt, status_flags), *data]
    elif kind == RT_RT:
        words = [command_word(rt, False, subaddress, n), command_word(rt2, True, subaddress2, n),
                 status_word(rt2, status_flags), *data, status_word(rt, status_flags)]
    elif kind == BROADCAST_RX:
        words = [command_word(BROADCAST, False, subaddress, n), *data]
    elif kind == MODE:
        transmit = mode_code < 16 or mode_code in (MODE_TRANSMIT_VECTOR, MODE_TRANSMIT_BIT)
        cmd = command_word(rt, transmit, 31, mode_code)
        if data and not transmit:
            words = [cmd, *data, status_word(rt, status_flags)]
        else:
            words = [cmd, status_word(rt, status_flags), *data]
    elif kind == BROADCAST_MODE:
        words = [command_word(BROADCAST, mode_code < 16, 31, mode_code), *data]
    else:
        raise ValueError(f"unknown message kind {kind!r}")
    return Message(time, bus, kind, [w & 0xFFFF for w in words],
                   gap2=40 if kind == RT_RT else 0, label=label)
