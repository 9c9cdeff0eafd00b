"""Support staff: their login, what they may do for which utility, and the audited actions.

Public entry points: ``actions.perform`` (one support action, audited once),
``actions.support_actions_for`` (the customer's view of support actions on their account),
``search.search_users`` / ``search.user_overview``, ``audit_log.search_audit`` /
``audit_log.export_json_lines``, ``auth.create_staff``.
"""

from .actions import support_actions_for

__all__ = ["support_actions_for"]
