"""The attester's signing key: from the environment, an encrypted keystore, or a generated dev key.

Order: ``TELEPROMPT_ATTESTER_KEY`` (hex), else ``TELEPROMPT_KEYSTORE`` (an eth-account encrypted
JSON keystore) with ``TELEPROMPT_KEYSTORE_PASSWORD``, else a development key generated on first use
into ``TELEPROMPT_HOME/keys/dev-attester.json`` (owner-only). The dev key is a convenience for
demos and tests only: anyone with the home folder can sign as it. Key material never appears in a
repr, a log line or an error message.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account

KEY_ENV = "TELEPROMPT_ATTESTER_KEY"
KEYSTORE_ENV = "TELEPROMPT_KEYSTORE"
PASSWORD_ENV = "TELEPROMPT_KEYSTORE_PASSWORD"
DEV_PASSWORD = "teleprompt-dev-only"
DEV_KEYSTORE = "dev-attester.json"

log = logging.getLogger(__name__)


class AttesterKeyError(ValueError):
    """The signing key could not be loaded; the message never contains key material."""


@dataclass(frozen=True)
class Attester:
    address: str
    source: str
    _key: bytes = field(repr=False)

    @property
    def is_dev(self) -> bool:
        return self.source == "dev"

    def private_key(self) -> bytes:
        return self._key


def _from_hex(value: str, source: str) -> Attester:
    try:
        account = Account.from_key(value.strip())
    except Exception:  # noqa: BLE001 - the library's message may echo the input
        raise AttesterKeyError(f"{source}: not a valid 32-byte hex private key") from None
    return Attester(account.address, source, bytes(account.key))


def _from_keystore(path: Path, password: str, source: str) -> Attester:
    try:
        data = json.loads(path.read_text())
        key = Account.decrypt(data, password)
    except FileNotFoundError:
        raise AttesterKeyError(f"{source}: keystore {path} not found") from None
    except Exception:  # noqa: BLE001
        raise AttesterKeyError(f"{source}: cannot decrypt keystore {path} (wrong {PASSWORD_ENV}?)") from None
    account = Account.from_key(key)
    return Attester(account.address, source, bytes(account.key))


def dev_keystore(home: Path) -> Path:
    """Create the development keystore if missing (0600 in a 0700 folder) and return its path."""
    folder = home / "keys"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / DEV_KEYSTORE
    if not path.exists():
        account = Account.from_key(secrets.token_bytes(32))
        keystore = Account.encrypt(account.key, DEV_PASSWORD, kdf="pbkdf2", iterations=100_000)
        # written whole under a private name, then linked into place: a crash never leaves a truncated
        # keystore, and of two first uses at once the second keeps the key the first put there
        tmp = folder / f".{DEV_KEYSTORE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(keystore, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return path
        finally:
            tmp.unlink(missing_ok=True)
        log.warning("Generated a DEVELOPMENT attester key %s at %s: for demos and tests only, set %s or %s in production.", account.address, path, KEY_ENV, KEYSTORE_ENV)
    return path


def load_attester(home: Path) -> Attester:
    if os.environ.get(KEY_ENV):
        return _from_hex(os.environ[KEY_ENV], KEY_ENV)
    if os.environ.get(KEYSTORE_ENV):
        return _from_keystore(Path(os.environ[KEYSTORE_ENV]), os.environ.get(PASSWORD_ENV, ""), KEYSTORE_ENV)
    attester = _from_keystore(dev_keystore(home), DEV_PASSWORD, "dev")
    return attester
