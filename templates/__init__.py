"""Jinja templates for pages, emails and SMS; a package only so that they ship with the wheel."""
