"""Plumbing shared by the measurement methods (written once, like Telegraf's
``plugins/common``)."""
