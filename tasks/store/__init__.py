"""store: what a run keeps on disk and how it decides with it: the journal (``state``), the
file checker, the recipe cache, the one-writer lock, file-system primitives, the one stat key
and racy rule (``statkey``) and the register of the plan's inputs (``inputs``). Imports
nothing above it."""
