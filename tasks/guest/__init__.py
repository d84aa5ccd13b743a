"""guest: the host's side of the guest: the VM, the SSH link, push, the wheelhouse, the guest run."""
