"""Pure rules: data from the tenant's config plus functions that return results with reasons.

Nothing here imports Flask, SQLAlchemy or any other layer of the broker (import-linter checks it),
so every rule is testable as a plain function.
"""
