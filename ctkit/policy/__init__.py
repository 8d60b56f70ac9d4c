"""What the user wrote: loading, the typed model, and semantic lint."""
