"""Everything that talks to the kernel. Never imports ctkit.policy."""
