"""The client over real sockets against the emulator."""
