"""Fuzzing of the packet path: the target (target.py), the atheris harness, the corpus."""
