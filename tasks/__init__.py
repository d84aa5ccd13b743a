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
- ``manifest``  manifests of installed files and the merge of a stage into ROOT
- ``checker``   xxh3 file_dep checker with a per-run and persistent digest cache
- ``state``     durable doit backend: one JSON file per task, committed per task
- ``lock``      one writer per project
- ``report``    progress reporter and per-package logs
"""
