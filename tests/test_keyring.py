"""AES-256-GCM keyring and sealer: rotation, cluster binding, refusals, key files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.keyring import (
    ENCRYPTED_MARK,
    KEY_SIZE,
    NONCE_SIZE,
    PLAIN_MARK,
    SEAL_OVERHEAD,
    AuthError,
    Keyring,
    KeyringError,
    Sealer,
    generate_key,
    parse_key,
)
from gossip.wire import DecodeError

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
K3 = b"\x07" * 32
CLUSTER = "mesh-one"
PAYLOAD = b"\x01\x91\x92\x03\x07 some gossip"


def _sealer(*keys: bytes, cluster: str = CLUSTER) -> Sealer:
    return Sealer(Keyring(list(keys)), cluster)


def test_round_trip_and_overhead() -> None:
    s = _sealer(K1)
    blob = s.seal(PAYLOAD)
    assert blob[0] == ENCRYPTED_MARK
    assert PAYLOAD not in blob
    assert len(blob) - len(PAYLOAD) == s.overhead == SEAL_OVERHEAD
    assert s.open(blob) == PAYLOAD
    assert s.open(s.seal(b"")) == b""


def test_fresh_nonce_per_message() -> None:
    s = _sealer(K1)
    a, b = s.seal(PAYLOAD), s.seal(PAYLOAD)
    assert a != b
    assert a[1 : 1 + NONCE_SIZE] != b[1 : 1 + NONCE_SIZE]


def test_insecure_sealer_marks_plaintext() -> None:
    s = Sealer(None, CLUSTER)
    blob = s.seal(PAYLOAD)
    assert blob == bytes([PLAIN_MARK]) + PAYLOAD
    assert s.overhead == 1
    assert s.open(blob) == PAYLOAD


def test_rotation_secondary_key_opens_old_primary_traffic() -> None:
    old = _sealer(K1)
    # Step 1 of a rotation: the new key is installed everywhere but K1 stays primary.
    installed = _sealer(K1, K2)
    assert old.open(installed.seal(PAYLOAD)) == PAYLOAD
    # Step 2: K2 becomes primary; nodes still on K1-primary are understood, and understand us.
    rotated = _sealer(K2, K1)
    assert rotated.open(old.seal(PAYLOAD)) == PAYLOAD
    assert installed.open(rotated.seal(PAYLOAD)) == PAYLOAD
    # A node that never learnt K2 cannot read the new primary's traffic.
    with pytest.raises(AuthError):
        old.open(rotated.seal(PAYLOAD))
    # Step 3: K1 removed; its traffic is now refused.
    done = _sealer(K2)
    with pytest.raises(AuthError):
        done.open(old.seal(PAYLOAD))


def test_primary_is_first_and_duplicates_collapse() -> None:
    ring = Keyring([K2, K1, K2])
    assert ring.primary == K2
    assert len(ring) == 2


def test_wrong_key_refused() -> None:
    with pytest.raises(AuthError):
        _sealer(K2).open(_sealer(K1).seal(PAYLOAD))


def test_wrong_cluster_name_refused() -> None:
    """The cluster name is the associated data: same key, other cluster, no conversation."""
    with pytest.raises(AuthError):
        _sealer(K1, cluster="mesh-two").open(_sealer(K1).seal(PAYLOAD))


def test_plaintext_refused_when_keyring_set() -> None:
    with pytest.raises(AuthError, match="plaintext"):
        _sealer(K1).open(Sealer(None, CLUSTER).seal(PAYLOAD))


def test_encrypted_refused_when_insecure() -> None:
    with pytest.raises(AuthError, match="no keyring"):
        Sealer(None, CLUSTER).open(_sealer(K1).seal(PAYLOAD))


def test_empty_blob_refused() -> None:
    for s in (_sealer(K1), Sealer(None, CLUSTER)):
        with pytest.raises(AuthError):
            s.open(b"")


def test_every_truncation_refused() -> None:
    s = _sealer(K1)
    blob = s.seal(PAYLOAD)
    for n in range(len(blob)):
        with pytest.raises(AuthError):
            s.open(blob[:n])


def test_every_bit_flip_refused() -> None:
    s = _sealer(K1)
    blob = s.seal(b"short")
    for i in range(1, len(blob)):  # byte 0 is the mark: flipping it is "plaintext", also refused
        for bit in range(8):
            tampered = bytearray(blob)
            tampered[i] ^= 1 << bit
            with pytest.raises(AuthError):
                s.open(bytes(tampered))
    with pytest.raises(AuthError):
        s.open(bytes([blob[0] ^ 0x80]) + blob[1:])


def test_auth_error_is_a_decode_error() -> None:
    """Callers that only catch DecodeError still never see a crash from a bad blob."""
    assert issubclass(AuthError, DecodeError)


def test_deterministic_nonce_source_is_used() -> None:
    s = Sealer(Keyring([K1]), CLUSTER, nonce_source=lambda n: b"\x09" * n)
    assert s.seal(PAYLOAD)[1 : 1 + NONCE_SIZE] == b"\x09" * NONCE_SIZE
    assert s.seal(PAYLOAD) == s.seal(PAYLOAD)


# --- keys and key files ------------------------------------------------------------------------


def test_generate_key_parses_back() -> None:
    text = generate_key()
    key = parse_key(text)
    assert len(key) == KEY_SIZE
    assert base64.b64encode(key).decode() == text
    assert generate_key() != text
    Keyring([key])  # usable as is


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not base64!", "base64"),
        ("é" * 44, "base64"),
        (base64.b64encode(b"x" * 16).decode(), "expected 32 bytes"),
        (base64.b64encode(b"x" * 33).decode(), "expected 32 bytes"),
        ("", "expected 32 bytes"),
    ],
)
def test_parse_key_refuses(text: str, why: str) -> None:
    with pytest.raises(KeyringError, match=why):
        parse_key(text, "somewhere")


def test_keyring_refuses_empty_or_short_keys() -> None:
    with pytest.raises(KeyringError):
        Keyring([])
    with pytest.raises(KeyringError):
        Keyring([K1, b"short"])


def _b64(k: bytes) -> str:
    return base64.b64encode(k).decode()


def test_from_file_reads_keys_in_order(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    path.write_text(f"# primary first\n\n  {_b64(K2)}  \n# old one\n{_b64(K1)}\n")
    ring = Keyring.from_file(path)
    assert ring.primary == K2
    assert len(ring) == 2
    assert Sealer(ring, CLUSTER).open(_sealer(K1).seal(PAYLOAD)) == PAYLOAD


def test_from_file_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    path.write_text(f"# comment\n{_b64(K1)}\n\n{_b64(b'y' * 20)}\n")
    with pytest.raises(KeyringError, match=f"{path}:4: expected 32 bytes"):
        Keyring.from_file(path)
    path.write_text(f"{_b64(K1)}\nthis is not a key\n")
    with pytest.raises(KeyringError, match=f"{path}:2: not valid base64"):
        Keyring.from_file(path)


def test_from_file_without_keys(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("# nothing here\n\n")
    with pytest.raises(KeyringError, match=f"{path}: no keys"):
        Keyring.from_file(path)


def test_from_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(KeyringError, match=f"{path}: cannot read"):
        Keyring.from_file(path)


# --- fuzzing -----------------------------------------------------------------------------------------

SEALERS = [Sealer(None, CLUSTER), _sealer(K1), _sealer(K2, K1, K3)]


@given(st.binary(max_size=200), st.sampled_from([b"", bytes([ENCRYPTED_MARK]), bytes([PLAIN_MARK])]))
@settings(max_examples=500, deadline=None)
def test_random_blobs_only_raise_auth_or_decode_error(data: bytes, prefix: bytes) -> None:
    for s in SEALERS:
        try:
            opened = s.open(prefix + data)
        except (AuthError, DecodeError):
            continue
        # Only the insecure sealer opens what it did not seal, and then it is just the body.
        assert s.keyring is None
        assert opened == (prefix + data)[1:]
