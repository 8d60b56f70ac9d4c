"""Fast tests: no root, no kernel. Shared code lives in goldens.py (import it by name)."""
