"""ctkit: declarative netfilter and connection-tracking policy for real Linux kernels."""

__version__ = "0.1.0"
