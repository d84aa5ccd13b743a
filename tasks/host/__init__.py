"""host: the half before the guest exists: preflight, the KVM probe, live-bootstrap's image."""
