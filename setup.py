"""Only the optional C helper of the fast-syscall transport; everything else is in
pyproject.toml. Without a compiler the build goes on and `karn run` falls back to the
exit transport (karn/platform/fastcall/server.py says so in one line)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "karn.platform.fastcall._fastpoll",
            ["karn/platform/fastcall/_fastpoll.c"],
            optional=True,
        )
    ]
)
