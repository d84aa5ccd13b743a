"""azl-bootstrap: the engine that turns recipes into doit tasks.

Every step is a recipe in ``recipes/`` of one *kind*; one module per concept:

- ``recipe``    the recipe model and the shared checks (``Checker``, ``RecipeError`` names
                file and field); the keys every recipe has and the package keys
- ``loader``    the one loader: recipe files -> validated recipes (``load_recipes``) -> this
                machine's plan (``Project``) -> doit tasks (what ``dodo.py`` calls)
- ``kinds``     one module per kind of recipe (package, checkpoint, session, tree, stage,
                git, distfiles) and the registry; ``kinds/__init__.py`` says what a kind module provides
- ``graph``     dependency resolution, cycles, topological order
- ``config``    the optional project config file ``azl-bootstrap.toml``
- ``platform``  where the build runs (sandbox, guest; host steps off the guest) and its
                variables
- ``download``  verified, resumable downloads into the mirror
- ``mirror``    fetch tasks' action: mirrors, URLs, Debian's pool, git snapshots
- ``gitpin``    a git commit id as a content pin: verified checkouts (with submodules) from
                mirrors, bundles, URLs or tree-verified snapshot tarballs
- ``lbsources`` live-bootstrap's ``steps/*/sources`` lines as mirror sources
- ``lbmirror``  live-bootstrap's distfile list at a pinned commit; its layout for rootfs.py
- ``unpack``    safe tar extraction (members cannot escape their directory)
- ``buildsys``  build-system templates (autotools, meson, cmake, make, script)
- ``build``     the build of one package: unpack, patch, configure, compile, install,
                manifest, merge into ROOT
- ``toolkit``   what the tree and stage kinds share: records, bounded-attempt action
- ``gomodules`` Go modules fetched on the host into a module cache, served offline in the guest
- ``manifest``  manifests of installed files and the merge of a stage into ROOT
- ``checker``   xxh3 file_dep checker with a per-run and persistent digest cache
- ``state``     durable doit backend: one append-only journal, committed per task
- ``lock``      one writer per project
- ``report``    progress reporter and per-package logs

The host half (before live-bootstrap's image exists):

- ``preflight`` what the machine has against what the run needs; the sizes later tasks use
- ``kvmprobe``  does KVM really work (a tiny guest, killed if it hangs)
- ``lbinputs``  what goes into live-bootstrap's image and the rootfs.py command line
- ``lbimage``   ``doit lb-image``: rootfs.py run to a finished image, its record and clean
- ``qemuwrap``  rootfs.py's ``--qemu-cmd``: TCG instead of KVM, serial console to a file
- ``lbprogress`` live-bootstrap's step names read from the serial console

The 32-bit rehearsal (the guest after the kexec, on any Debian x86_64 machine, as root;
``python -m tasks.rehearsal32``):

- ``rehearsal32``          the Debian i386 root (debootstrap, cached) and entering it (chroot)
- ``rehearsal32_go``       go1.23 with GOHOSTARCH=386 in it; the toolkit's Statfs_t line
- ``rehearsal32_packages`` this project's doit inside, building recipes for i686

The host's side of the guest (after the image: the VM and the link to it):

- ``vm``          the live-bootstrap image booted with qemu, waited for on SSH, powered off
- ``link``        ssh to the guest with a generated key and the recorded host key
- ``push``        content-compared push of a tree to the guest (one tar stream)
- ``wheelhouse``  the engine's Python dependencies for the guest, installed offline
- ``guestrun``    the guest ``doit`` run detached and followed live, across the kexec
- ``guestdrive``  boot, push, install, run, power off: what a host task does
"""
