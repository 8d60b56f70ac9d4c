"""Generators from the IR to what a kernel tool accepts. Backends never touch the kernel."""
