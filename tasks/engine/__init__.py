"""engine: the plan (recipes -> doit tasks), the graph, the no-op stamp, commands and report.
Nothing imports it but ``dodo.py``, the doit plugins and the tests."""
