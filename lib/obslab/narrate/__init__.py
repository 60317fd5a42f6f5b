"""The incident narrator: facts from the store, a local model (or rules), a grounding check."""
