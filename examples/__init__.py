"""Examples of sessiondb in use. Not part of the installed package."""
