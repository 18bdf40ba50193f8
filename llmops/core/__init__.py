"""The lowest layer: errors, atomic file io, config-tree walking, Kubernetes names and limits,
secret masking, bundled resources. Imports nothing else of llmops."""
