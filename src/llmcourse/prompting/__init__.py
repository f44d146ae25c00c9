"""Chapter 12: prompts, in-context learning, chain of thought and soft prompts."""
