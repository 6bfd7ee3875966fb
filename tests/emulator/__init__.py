"""Tests of the emulator's modules, over real sockets to an emulator in this process."""
