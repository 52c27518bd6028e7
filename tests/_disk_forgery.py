"""What someone who can write into a cache folder, but has no key, can do to a
block: shared by the tests of the disk cache."""

import hashlib
import json
import struct

import numpy as np


def parse_block(path):
    """``(magic, header, keys, values)`` of a block file, unchecked."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16 : 16 + size])
    start = 16 + size
    end_keys = start + header["rows"] * header["key_size"]
    values = np.frombuffer(data[end_keys + 32 :], dtype=header["dtype"])
    values = values.reshape(header["rows"], *header["shape"])
    return data[:8], header, data[start:end_keys], values


def write_unkeyed(path, magic, header, keys, values, field):
    """A block whose checksums are right for anyone who does not hold the key:
    BLAKE2b-256 without a key, as skchain's earlier format had them."""
    values_bytes = np.ascontiguousarray(values).tobytes()
    header = {k: v for k, v in header.items() if k not in ("values_mac", "values_checksum")}
    header[field] = hashlib.blake2b(values_bytes, digest_size=32).hexdigest()
    encoded = json.dumps(header, sort_keys=True).encode()
    head = magic + struct.pack("<Q", len(encoded)) + encoded
    index = hashlib.blake2b(head + keys, digest_size=32).digest()
    path.write_bytes(head + keys + index + values_bytes)


def plant(path):
    """Double a block's values and recompute its checksums without the key."""
    magic, header, keys, values = parse_block(path)
    write_unkeyed(path, magic, header, keys, values * 2, "values_mac")


def old_format(path):
    """Rewrite a block in the format of skchain before keyed MACs (same values)."""
    _, header, keys, values = parse_block(path)
    write_unkeyed(path, b"SKCHOUT2", header, keys, values, "values_checksum")


def with_key(key):
    """Re-encode a block, same values, with another key (another user's, an
    old key)."""

    def rewrite(path):
        from skchain import _disk

        _, header, keys, values = parse_block(path)
        namespace = path.parent.parent.name[1:]  # m<namespace>/<block>/output.pkl
        split = [keys[i : i + header["key_size"]] for i in range(0, len(keys), header["key_size"])]
        path.write_bytes(_disk._encode_block(split, values.copy(), key, namespace))

    return rewrite
