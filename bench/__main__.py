"""``python -m bench``: the engine's table (``bench.run``, issue 11's figures).
``python -m bench NAME [ARGS]``: one of the other benchmarks, ``tests/bench_NAME.py``
(they share the tests' fixtures, so they live there): mirror, host, kernel64, libelf, vm, push,
faults, e2e. Run from the repository root."""

import runpy
import sys

OTHERS = ("mirror", "host", "kernel64", "libelf", "vm", "push", "faults", "e2e")

if len(sys.argv) > 1 and sys.argv[1] in OTHERS:
    name = sys.argv.pop(1)
    runpy.run_module(f"tests.bench_{name}", run_name="__main__", alter_sys=True)
else:
    from bench.run import main

    main()
