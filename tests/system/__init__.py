"""Whole programs and long runs: soak, crash, fuzzing, the browser, the notebooks, the README."""
