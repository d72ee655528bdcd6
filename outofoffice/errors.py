"""Errors the domain raises for people to read."""


class ValidationError(Exception):
    """Bad input; ``errors`` maps each field to what to fix."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
