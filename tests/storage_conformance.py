"""The storage driver-conformance suite: what every `Storage` driver must do.

Use: in `tests/test_storage_<driver>.py`, subclass `StorageConformance` as
`TestXxxStorage` and implement the hooks of `ConformanceBase`:

* `make_storage(tmp_path)`: a new, empty store under `tmp_path`;
* `reopen_storage(storage, tmp_path)`: the same store opened afresh (`storage` is
  already closed), as a new process would see it;
* `external_deliver` / `external_set_flags` / `external_expunge` /
  `external_set_attribute`: change the store behind the driver's back, as an MDA or
  IMAP client (or Dovecot itself) would;
* optionally `now()` (the driver's clock) and the `supports_*` class flags.

Everything is tested through the interface of pydsync_server/storage/base.py only:
tree and mailbox log (storage_conformance_tree.py), transactions, status and change
tracking (storage_conformance_mail.py), mailbox attributes
(storage_conformance_attributes.py), and a model-based check of change merging
(storage_conformance_model.py).
"""

from __future__ import annotations

from storage_conformance_attributes import AttributeConformance
from storage_conformance_base import ConformanceBase, msg
from storage_conformance_mail import ChangeConformance, MailConformance
from storage_conformance_model import ChangeModelConformance
from storage_conformance_tree import HOSTILE_NAMES, TreeConformance

__all__ = ["HOSTILE_NAMES", "ConformanceBase", "StorageConformance", "msg"]


class StorageConformance(
    TreeConformance,
    MailConformance,
    ChangeConformance,
    AttributeConformance,
    ChangeModelConformance,
):
    """All conformance tests; subclass it and implement the `ConformanceBase` hooks."""
