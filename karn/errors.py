"""User-facing errors: one class hierarchy, each turned into one line by the CLI."""


class KarnError(Exception):
    """An error the user can cause or fix; printed as one line, never a traceback."""

    exit_code = 125  # like docker/podman: the runtime itself failed


class UsageError(KarnError):
    exit_code = 125


class NotFoundError(KarnError):
    """No image, instance or system by that name (docs/cli.md: exit 1, as docker's `No
    such container` / `No such image`)."""

    exit_code = 1


class PlatformError(KarnError):
    """KVM missing, inaccessible or refusing the set-up."""


class ImageError(KarnError):
    """The program or root filesystem cannot be used (not ELF, wrong arch, missing file)."""

    exit_code = 127
