"""azl-bootstrap: the engine that turns recipes into doit tasks.

Every step is a recipe in ``recipes/`` of one *kind*. The engine is one package per layer;
a layer imports only the layers above it in this list, never one below it:

- ``store``    what a run keeps and decides with: the journal (``state``), the xxh3 file
               ``checker``, the ``recipecache``, the one-writer ``lock``, ``fsutil``, the
               one stat key and racy rule (``statkey``), the plan's read ``inputs``
- ``model``    the ``recipe`` model and its checks, the project ``config``, the ``platform``
- ``sources``  verified ``download``\\ s, the ``mirror``, ``gitpin`` (a commit as a content pin),
               ``gomodules``, live-bootstrap's distfile lists (``lbsources``, ``lbmirror``)
- ``build``    one package's build (``action``: unpack, patch, configure, compile, install,
               manifest, merge into ROOT), build ``systems``, ``unpack``, ``manifest``,
               ``adopt``, ``verify``, the ``jobserver`` and the ``supervise``\\ r
- ``toolkit``  what the Azure Linux tree and stage kinds share (records, bounded attempts)
- ``host``     the half before the guest: ``preflight``, ``kvmprobe``, live-bootstrap's image
               (``lbinputs``, ``lbimage``, ``qemuwrap``, ``lbprogress``)
- ``guest``    the host's side of the guest: ``vm``, ``link``, ``push``, ``wheelhouse``,
               the guest ``run`` followed across the kexec, ``drive`` (what a host task does)
- ``kinds``    one module per kind of recipe, a thin adapter from recipe to tasks
- ``engine``   the ``recipeset`` (parse + validate), the ``plan`` (``dodo.py`` calls
               ``setup``), the ``graph``, the ``noop`` stamp, doit ``commands`` (and the
               ``status`` in words they print), ``report``

``toolkit``, ``host`` and ``guest`` are one floor: none imports another. Harnesses that prove
things (the 32-bit rehearsal, the kernel and libelf proofs, the bench bodies) live under
``tests/``: editing them invalidates no recipe cache and no no-op stamp.
"""
