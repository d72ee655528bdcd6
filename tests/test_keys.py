"""The secret key file, sub-keys, signatures and encryption at rest."""

import os
import stat

import pytest

from outofoffice import keys

pytestmark = pytest.mark.no_database


def test_the_key_file_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "data" / "secret.key"
    assert keys.create_key_file(path) is True
    first = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.create_key_file(path) is False
    assert path.read_text() == first


def test_a_key_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "secret.key"
    keys.create_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(keys.KeyFileError, match="chmod 600"):
        keys.Keys.load(path)


def test_a_missing_key_says_how_to_make_one(tmp_path):
    with pytest.raises(keys.KeyFileError, match="outofoffice init"):
        keys.Keys.load(tmp_path / "secret.key")


def test_each_purpose_has_its_own_subkey(tmp_path):
    k = keys.Keys.open(tmp_path / "secret.key")
    derived = {k.subkey(p) for p in keys.PURPOSES}
    assert len(derived) == len(keys.PURPOSES)
    assert k.sign("csrf", "x") != k.sign("action-link", "x")


def test_signatures_verify_and_tampering_fails(tmp_path):
    k = keys.Keys.open(tmp_path / "secret.key")
    sig = k.sign("action-link", "dispatch=1;vendor=2;action=accept")
    assert k.verify("action-link", "dispatch=1;vendor=2;action=accept", sig)
    assert not k.verify("action-link", "dispatch=1;vendor=3;action=accept", sig)
    assert not k.verify("csrf", "dispatch=1;vendor=2;action=accept", sig)


def test_encryption_round_trips_and_hides_the_plaintext(tmp_path):
    k = keys.Keys.open(tmp_path / "secret.key")
    sealed = k.encrypt("Burst pipe at 12 Elm Street")
    assert "Elm" not in sealed
    assert k.encrypt("same") != k.encrypt("same")
    assert k.decrypt(sealed) == "Burst pipe at 12 Elm Street"


def test_altered_ciphertext_is_refused(tmp_path):
    k = keys.Keys.open(tmp_path / "secret.key")
    sealed = k.encrypt("hello")
    altered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(keys.KeyFileError):
        k.decrypt(altered)


def test_after_rotation_old_values_still_decrypt(tmp_path):
    path = tmp_path / "secret.key"
    old = keys.Keys.open(path)
    sealed = old.encrypt("kept")
    signature = old.sign("csrf", "m")
    new_path = tmp_path / "new.key"
    keys.create_key_file(new_path)
    new_path.write_text(new_path.read_text() + path.read_text())
    rotated = keys.Keys.load(new_path)
    assert rotated.decrypt(sealed) == "kept"
    assert rotated.verify("csrf", "m", signature)
    assert rotated.encrypt("x").split(".")[1] != sealed.split(".")[1]


def test_tokens_are_stored_as_sha256():
    token = keys.new_token()
    assert len(token) >= 43
    assert keys.hash_token(token) != token and len(keys.hash_token(token)) == 64
