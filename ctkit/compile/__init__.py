"""Model -> backend-neutral IR."""
