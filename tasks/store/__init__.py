"""store: what a run keeps on disk and how it decides with it: the journal (``state``), the
file checker, the recipe cache, the one-writer lock, file-system primitives. Imports nothing
above it."""
