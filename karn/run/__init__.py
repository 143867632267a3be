"""One run of a program in its own VM, assembled in one direction (docs/architecture.md):

config   RunConfig, and resolve(): the command line, an image's settings and the policy
         merged and checked, before any image is pulled or VM made
image    which image `karn run NAME` means, found or pulled, held for the run
builder  a RunConfig -> a Guest: manifest, VM, address space, filesystems, the process
         with its network stack, the loaded program
guest    the built guest: the one handle debug/, instance/ and sandbox/ use, and the
         RunPlugin hooks they implement
runner   run(): signal forwarding, the first task, limits, plug-ins, the crash report

Nothing here is imported at package level: `karn run` loads each module when it needs it.
"""
