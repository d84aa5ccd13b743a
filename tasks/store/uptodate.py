"""What doit needs to call an ``uptodate`` object, computed once instead of once per task.

doit calls ``inspect.signature`` on every uptodate callable of every task on every run, to
see whether it takes ``task`` and ``values``; for a callable object that means building the
signature of its ``__call__`` each time. ``inspect.signature`` returns an object's
``__signature__`` when it has one, so the engine's uptodate classes set ``__signature__ =
SIGNATURE`` (their ``__call__(self, task, values)``) and doit's per-task cost drops to an
attribute lookup.
"""

from __future__ import annotations

from inspect import Parameter, Signature

SIGNATURE = Signature(
    [
        Parameter("task", Parameter.POSITIONAL_OR_KEYWORD),
        Parameter("values", Parameter.POSITIONAL_OR_KEYWORD),
    ]
)
