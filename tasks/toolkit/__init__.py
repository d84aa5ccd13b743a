"""toolkit: what the Azure Linux tree and stage kinds share (layout, records, bounded attempts)."""
