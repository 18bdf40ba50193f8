"""Kubernetes, in one place: object files, CRD schema closing and validation (and CEL rules)."""
