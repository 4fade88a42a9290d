"""WireGuard key file: created 0600 on first start, reloaded unchanged, refused when loose or damaged."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from pathlib import Path

import pytest

from transit.claimfile import load_or_record_claim
from transit.keys import KEY_FILE, KeyFileError, PrivateKey, PublicKey, clamp, load_key, load_or_create_key


def test_first_start_creates_a_0600_key_and_later_starts_reuse_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = load_or_create_key(state)
    path = state / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert load_or_create_key(state) == key
    assert load_or_create_key(state).public_key == key.public_key
    assert [p.name for p in state.iterdir()] == [KEY_FILE]  # no temporary file left behind


def test_key_file_is_wg_genkey_format_and_clamped(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    text = (tmp_path / KEY_FILE).read_text()
    assert text.endswith("\n") and len(text) == 45
    raw = base64.b64decode(text)
    assert raw == clamp(raw) == key.reveal()


def test_public_key_matches_wg_pubkey_when_available(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    try:
        out = subprocess.run(
            ["wg", "pubkey"], input=(tmp_path / KEY_FILE).read_bytes(), capture_output=True, check=True
        )
    except FileNotFoundError:
        pytest.skip("wg (wireguard-tools) not installed")
    assert out.stdout.decode().strip() == key.public_key.b64


def test_unclamped_key_is_the_same_key() -> None:
    raw = bytes(range(32))
    assert PrivateKey(raw) == PrivateKey(clamp(raw))
    assert PrivateKey(raw).public_key == PrivateKey(clamp(raw)).public_key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_loose_mode_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    load_or_create_key(tmp_path)
    path = tmp_path / KEY_FILE
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=r"must be 0600.*chmod 600") as info:
        load_or_create_key(tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not base64!!\n",
        base64.b64encode(b"x" * 31) + b"\n",
        base64.b64encode(b"x" * 33) + b"\n",
        b"\xff" * 44,
    ],
)
def test_bad_content_is_refused_without_quoting_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError, match="not a WireGuard private key") as info:
        load_or_create_key(tmp_path)
    if content.strip():
        assert content.decode(errors="replace").strip() not in str(info.value)
    assert path.read_bytes() == content  # never overwritten: the operator decides


def test_symlink_and_directory_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    load_or_create_key(target)
    state = tmp_path / "state"
    state.mkdir()
    (state / KEY_FILE).symlink_to(target / KEY_FILE)
    with pytest.raises(KeyFileError, match="symbolic link"):
        load_or_create_key(state)
    other = tmp_path / "other"
    (other / KEY_FILE).mkdir(parents=True)
    with pytest.raises((KeyFileError, IsADirectoryError)):
        load_key(other / KEY_FILE)


def test_private_key_never_shows_in_repr_str_or_format() -> None:
    key = PrivateKey.generate()
    secret_forms = [base64.b64encode(key.reveal()).decode(), key.reveal().hex(), repr(key.reveal())]
    shown = [repr(key), str(key), f"{key}", f"{[key]}", f"{ {'k': key} }"]
    for text in shown:
        for secret in secret_forms:
            assert secret not in text
    assert key.public_key.b64 in repr(key)


def test_public_key_codecs() -> None:
    pub = PrivateKey.generate().public_key
    assert PublicKey.from_b64(pub.b64) == pub
    assert PublicKey.from_hex(pub.hex) == pub
    assert str(pub) == pub.b64
    for bad in ["", "abc", base64.b64encode(b"x" * 31).decode(), "!!!!"]:
        with pytest.raises(ValueError):
            PublicKey.from_b64(bad)
    with pytest.raises(ValueError):
        PublicKey.from_hex("zz" * 32)


def test_claim_time_is_kept_per_address(tmp_path: Path) -> None:
    import ipaddress

    a = ipaddress.ip_address("100.64.0.1")
    b = ipaddress.ip_address("100.64.0.2")
    assert load_or_record_claim(tmp_path, a, 1000) == 1000
    assert load_or_record_claim(tmp_path, a, 5000) == 1000  # restart keeps seniority
    assert load_or_record_claim(tmp_path, b, 6000) == 6000  # a new address is a new claim
    (tmp_path / "mesh-claim.json").write_text("{garbage")
    assert load_or_record_claim(tmp_path, b, 7000) == 7000
