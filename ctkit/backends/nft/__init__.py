"""The nftables backend: IR -> libnftables JSON, applied in one transaction per table."""
