import stat

import pytest
from eth_account import Account

from teleprompt_assets.attest.keys import KEY_ENV, KEYSTORE_ENV, PASSWORD_ENV, AttesterKeyError, load_attester

HEX = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3b362318"


def test_dev_key_is_generated_once_owner_only_and_labeled(tp_home, caplog):
    first = load_attester(tp_home)
    second = load_attester(tp_home)
    assert first.address == second.address and first.is_dev
    path = tp_home / "keys" / "dev-attester.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "DEVELOPMENT" in caplog.text
    assert first.private_key().hex() not in caplog.text and first.private_key().hex() not in repr(first)


def test_env_key_overrides(tp_home, monkeypatch):
    monkeypatch.setenv(KEY_ENV, HEX)
    attester = load_attester(tp_home)
    assert attester.address == Account.from_key(HEX).address and not attester.is_dev
    assert not (tp_home / "keys").exists()


def test_encrypted_keystore(tp_home, monkeypatch):
    path = tp_home / "ks.json"
    tp_home.mkdir(parents=True, exist_ok=True)
    import json

    path.write_text(json.dumps(Account.encrypt(HEX, "s3cret", kdf="pbkdf2", iterations=1000)))
    monkeypatch.setenv(KEYSTORE_ENV, str(path))
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    assert load_attester(tp_home).address == Account.from_key(HEX).address
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(AttesterKeyError, match="cannot decrypt"):
        load_attester(tp_home)


def test_bad_key_error_never_echoes_it(tp_home, monkeypatch):
    bad = "0x" + "zz" * 32
    monkeypatch.setenv(KEY_ENV, bad)
    with pytest.raises(AttesterKeyError) as info:
        load_attester(tp_home)
    assert bad not in str(info.value) and "zz" not in str(info.value)
