"""sources: what comes from outside, verified: downloads, the mirror, git pins, Go module caches,
live-bootstrap's distfile lists. Imports store and model."""
