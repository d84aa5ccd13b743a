"""azl-bootstrap: the engine that turns recipes into doit tasks.

One module per concept:

- ``recipe``    recipe schema, loading and validation (``RecipeError`` names file and field)
- ``graph``     dependency resolution, cycles, topological order
- ``config``    the optional project config file ``azl-bootstrap.toml``
- ``platform``  where the build runs (sandbox or guest) and its variables
- ``download``  verified, resumable downloads into the mirror
- ``unpack``    safe tar extraction (members cannot escape their directory)
- ``buildsys``  build-system templates (autotools, meson, cmake, make, script)
- ``build``     the build of one package: unpack, patch, configure, compile, install,
                manifest, merge into ROOT
- ``manifest``  manifests of installed files and the merge of a stage into ROOT
- ``checker``   xxh3 file_dep checker with a per-run and persistent digest cache
- ``state``     durable doit backend: one JSON file per task, committed per task
- ``lock``      one writer per project
- ``report``    progress reporter and per-package logs
- ``loader``    recipes -> doit task dicts (what ``dodo.py`` calls)

The host half (before live-bootstrap's image exists):

- ``preflight`` what the machine has against what the run needs; the sizes later tasks use
- ``kvmprobe``  does KVM really work (a tiny guest, killed if it hangs)
- ``lbinputs``  what goes into live-bootstrap's image and the rootfs.py command line
- ``lbimage``   ``doit lb-image``: rootfs.py run to a finished image, its record and clean
- ``qemuwrap``  rootfs.py's ``--qemu-cmd``: TCG instead of KVM, serial console to a file
- ``lbprogress`` live-bootstrap's step names read from the serial console
"""
