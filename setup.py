"""Only karn's optional C helpers; everything else is in pyproject.toml. Without a
compiler the build goes on: `karn run` falls back to the exit transport
(karn/platform/fastcall/server.py says so in one line), and host mounts make openat2
through ctypes (karn/kernel/fs/hostfs.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "karn.platform.fastcall._fastpoll",
            ["karn/platform/fastcall/_fastpoll.c"],
            optional=True,
        ),
        Extension(
            "karn.kernel.fs._hostcalls",
            ["karn/kernel/fs/_hostcalls.c"],
            optional=True,
        ),
    ]
)
