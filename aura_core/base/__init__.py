"""Plain values and files under everything: atomic files, tokenised batches, concept data."""
