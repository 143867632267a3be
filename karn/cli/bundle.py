"""`python3 -m karn.cli.bundle`: compile every karn module into the bundle the command
line's finder loads them from (karn/cli/bytecode.py); `make install` runs it. Run it
again after an upgrade or an edit: a module whose source changed since is loaded from its
.pyc or its source instead, as before the bundle."""

from __future__ import annotations

import marshal
import os

from karn.cli.bytecode import BUNDLE_MAGIC, Entry, bundle_path


def write_bundle(package_dir: str) -> int:
    """Compile every module below package_dir into its bundle (replaced whole, never
    rewritten in place: a running karn maps it); the number of modules."""
    index: dict[str, Entry] = {}
    blobs: list[bytes] = []
    offset = 0
    for directory, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for file in sorted(f for f in files if f.endswith(".py")):
            source = os.path.join(directory, file)
            rel = os.path.relpath(source, package_dir)
            parts = [os.path.basename(package_dir), *rel[:-3].split(os.sep)]
            package = parts[-1] == "__init__"
            if package:
                parts.pop()
            if len(parts) < 2:
                continue  # the package itself: imported before the finder is there
            with open(source, "rb") as f:
                st = os.fstat(f.fileno())
                code = compile(f.read(), source, "exec", dont_inherit=True)
            blob = marshal.dumps(code)
            index[".".join(parts)] = (rel, st.st_mtime_ns, st.st_size, package, offset,
                                      len(blob))
            blobs.append(blob)
            offset += len(blob)
    head = marshal.dumps(index)
    path = bundle_path(package_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}"
    with open(temporary, "wb") as out:
        out.write(BUNDLE_MAGIC + len(head).to_bytes(8, "little") + head)
        for blob in blobs:
            out.write(blob)
    os.replace(temporary, path)
    return len(index)


if __name__ == "__main__":
    import karn

    where = os.path.dirname(os.path.abspath(karn.__file__))
    print(f"{write_bundle(where)} modules in {bundle_path(where)}")
