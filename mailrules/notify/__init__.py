"""Notifications: the ``notify`` action's notifiers, outbox and channels.

A rule's ``notify`` step renders its text when the rule runs (``payload.py``); the row
goes into the SQLite outbox in the transaction that records the message as handled
(``store.py``). After the mail work, the dispatcher (``outbox.py``) sends what is due
through the channel modules (``webhook``, ``sms``, ``apprise``, ``command``,
``forward``), retrying with backoff and dead-lettering, and folds rate-limited rows into
digests. Config: ``config.py`` and ``model.py``.
"""
