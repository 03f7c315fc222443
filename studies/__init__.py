"""Studies: long measurements behind the README's figures, each one command (tooling, not the library)."""
