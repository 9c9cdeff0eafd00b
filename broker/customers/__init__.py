"""The utility's customer register: lookups (registry), bulk import, and their helpers."""
