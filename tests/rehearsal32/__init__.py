"""The 32-bit rehearsal: the guest after the kexec, in a Debian i386 root (``python -m tests.rehearsal32``)."""
