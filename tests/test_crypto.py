import base64
import os

import pytest
from cryptography.exceptions import InvalidTag

from callvault.crypto import KeyError_, KeyRing


def ring(*keys: bytes) -> KeyRing:
    return KeyRing.from_b64([base64.b64encode(k).decode() for k in keys])


def test_seal_round_trips_with_fresh_nonces():
    keys = ring(os.urandom(32))
    one, two = keys.seal(b"secret", "conn-1"), keys.seal(b"secret", "conn-1")
    assert one != two  # a fresh nonce each time
    assert b"secret" not in base64.b64decode(one.split(":")[1])
    assert keys.open(one, "conn-1") == b"secret"


def test_associated_data_binds_the_value_to_its_row():
    keys = ring(os.urandom(32))
    sealed = keys.seal(b"secret", "conn-1")
    with pytest.raises(InvalidTag):
        keys.open(sealed, "conn-2")


def test_rotation_old_values_open_until_the_old_key_is_removed():
    old, new = os.urandom(32), os.urandom(32)
    sealed = ring(old).seal(b"secret", "c")
    rotated = ring(new, old)
    assert rotated.needs_rotation(sealed)
    assert rotated.open(sealed, "c") == b"secret"
    resealed = rotated.seal(rotated.open(sealed, "c"), "c")
    assert not rotated.needs_rotation(resealed)
    assert ring(new).open(resealed, "c") == b"secret"
    with pytest.raises(KeyError_):
        ring(new).open(sealed, "c")


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode()])
def test_malformed_keys_are_refused(bad):
    with pytest.raises(KeyError_):
        KeyRing.from_b64([bad])
