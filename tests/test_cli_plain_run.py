"""`karn run PROGRAM [ARGS]` is parsed without argparse (karn/cli/run.py plain_run): its
namespace must be the one argparse makes of the same words, and every other command line
must still go to argparse (help, errors)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from karn.cli.parser import build_parser
from karn.cli.run import plain_run, rewrite_trace

PLAIN = (
    ["run", "prog"],
    ["run", "/bin/true", "a", "b"],
    ["run", "prog", "--help"],  # the program's option, not karn's
    ["run", "prog", "-h", "--version", "-m", "5", "--trace=read"],
    ["run", "prog", "a", "--log-level"],
    ["run", "nginx:latest", "-g", "daemon off;"],
    ["run", ""],
)
NOT_PLAIN = (
    [], ["--help"], ["run"], ["run", "--help"], ["run", "-m", "1g", "prog"],
    ["--debug", "run", "prog"], ["run", "--", "prog"], ["run", "prog", "--", "x"],
    ["run", "prog", "a", "--"], ["images"], ["ps", "prog"],
)


def argparse_namespace(argv: list[str], with_images: bool) -> dict[str, object]:
    parser, run_parser = build_parser(with_images=with_images)
    parsed = vars(parser.parse_args(argv[:1] + rewrite_trace(argv[1:], run_parser)))
    parsed.pop("run_parser", None)  # `karn policy suggest`'s, set by the full parser
    return parsed


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
@pytest.mark.parametrize("with_images", [False, True])
@pytest.mark.parametrize("transport", [None, "exit"])
def test_plain_run_is_what_argparse_makes(argv: list[str], with_images: bool,
                                          transport: str | None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if transport is None:
        monkeypatch.delenv("KARN_SYSCALL_TRANSPORT", raising=False)
    else:
        monkeypatch.setenv("KARN_SYSCALL_TRANSPORT", transport)
    plain = plain_run(list(argv))
    assert plain is not None
    assert vars(plain) == argparse_namespace(list(argv), with_images)


def test_plain_run_lists_are_its_own() -> None:
    first, second = plain_run(["run", "a"]), plain_run(["run", "b"])
    assert first is not None and second is not None
    first.env.append("X=1")
    assert second.env == []


@pytest.mark.parametrize("argv", NOT_PLAIN, ids=lambda argv: " ".join(argv) or "(none)")
def test_other_command_lines_go_to_argparse(argv: list[str]) -> None:
    assert plain_run(list(argv)) is None


def test_run_help_and_errors_come_from_argparse() -> None:
    def karn(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "karn", *words], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=60)

    help_text = karn("run", "--help")
    assert help_text.returncode == 0
    assert help_text.stdout.startswith("usage: karn run ")
    assert "--syscall-transport" in help_text.stdout
    missing = karn("run")
    assert missing.returncode == 125
    assert missing.stderr == ("karn: the following arguments are required: PROGRAM|IMAGE, "
                              "ARGS (see 'karn run --help')\n")
