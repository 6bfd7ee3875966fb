"""The test suite, one folder per kind of need (the marker of the same name is set by folder in
conftest.py): ``unit`` (no sockets), ``emulator`` (the emulator's own modules), ``integration``
(the client over real sockets against the emulator), ``system`` (whole programs, soak, crash,
fuzzing, browser, notebooks)."""
