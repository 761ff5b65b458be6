"""The fastembed_ext test suite; runs against the installed package."""
