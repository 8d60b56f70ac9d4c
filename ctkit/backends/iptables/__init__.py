"""The iptables backend: IR -> iptables-restore documents, applied with an ownership record."""
