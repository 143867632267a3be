"""karn as an OCI runtime (`karn-oci`): a runc-compatible command line for podman,
containerd's runc shim, CRI-O and Kubernetes (docs/oci-runtime.md).

    spec.py      a bundle's config.json -> a ContainerSpec (a RunConfig and what the init
                 needs); every field that would weaken isolation if ignored is refused
    limits.py    process.rlimits, linux.resources and io.karn.* annotations -> policy
    state.py     the state directory: one directory per container, its status
    hooks.py     the prestart/createRuntime/poststart/poststop hooks
    console.py   a pty for process.terminal, its master sent to --console-socket
    init.py      the container's init process: the karn monitor, waiting for `start`
    commands.py  create, start, state, kill, delete, list, ps, features, exec
    cli.py       the command line: runc's global options and exit statuses
"""
