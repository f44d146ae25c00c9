"""Chapter 14: images and text together: fusion, contrastive learning, a GPT that sees."""
