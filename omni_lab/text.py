"""Text shown to people: token pieces of a random or quantized model can be control characters."""


def printable(text: str, keep: str = "\n\t") -> str:
    """Control characters escaped (\\x07 instead of moving the cursor or printing as a blank line), the
    characters in `keep` left as they are."""
    return "".join(c if c.isprintable() or c in keep else ascii(c)[1:-1] for c in text)
