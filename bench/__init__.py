"""Engine benchmark (``python -m bench``): every figure of issue 11 as a ratio against its
twin measured in the same run. Not a test: timings are printed, never asserted."""
