#!/bin/sh
# `podman run --rm IMAGE true` wall time, karn-oci beside runc (docs/benchmarks.md).
# Usage: bench/oci_startup.sh [RUNS]. Needs podman and runc, as root; imports a
# busybox-static image from a local directory (no registry).
set -eu
runs=${1:-10}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin"
cp /bin/busybox "$work/root/bin/busybox"
ln -s busybox "$work/root/bin/true"
tar -C "$work/root" -cf "$work/root.tar" .
podman import --quiet "$work/root.tar" localhost/karn-bench-busybox:1 >/dev/null
printf '#!/bin/sh\nPYTHONPATH=%s exec python3 -m karn.oci "$@"\n' "$repo" > "$work/karn-oci"
chmod +x "$work/karn-oci"
# runc applies podman's default rlimits; without CAP_SYS_RESOURCE it keeps the hard ones
limits="--ulimit nofile=$(ulimit -Hn):$(ulimit -Hn) --ulimit nproc=4096:4096"
for name in karn runc; do
    if [ $name = karn ]; then rt="--runtime $work/karn-oci"; else rt="--runtime runc $limits"; fi
    # shellcheck disable=SC2086
    podman run --rm $rt localhost/karn-bench-busybox:1 /bin/true  # warm-up
    start=$(date +%s.%N)
    i=0
    while [ $i -lt "$runs" ]; do
        # shellcheck disable=SC2086
        podman run --rm $rt localhost/karn-bench-busybox:1 /bin/true
        i=$((i + 1))
    done
    end=$(date +%s.%N)
    python3 -c "print('$name: %.2f s per podman run --rm IMAGE true' % (($end - $start) / $runs))"
done
