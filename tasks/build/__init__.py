"""build: one package's build (the action, build systems, unpack, manifest, adopt, verify), the job
budget and the supervisor every build command runs under. Imports store, model, sources."""

# Bump when the meaning of a build changes (templates, environment): every package reruns.
ENGINE_VERSION = 1
