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

The host's side of the guest (the VM and the link to it):

- ``vm``          the live-bootstrap image booted with qemu, waited for on SSH, powered off
- ``link``        ssh to the guest with a generated key and the recorded host key
- ``push``        content-compared push of a tree to the guest (one tar stream)
- ``wheelhouse``  the engine's Python dependencies for the guest, installed offline
- ``guestrun``    the guest ``doit`` run detached and followed live, across the kexec
- ``guestdrive``  boot, push, install, run, power off: what a host task does
"""
