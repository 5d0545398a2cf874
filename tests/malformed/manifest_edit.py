"""Edits of a compiled artifact's `model.manifest` (magic bytes and a protobuf message,
the schema of compiler/artifact/src/lib.rs) at the wire level, for the malformed-input corpus: each
edit is what a careless tool or an attacker might do after compiling, and dlc-runtime
must refuse the artifact (its code's signature no longer matches) rather than read or
write past a buffer. Only the wire format is needed: varints, 64-bit, length-delimited
and 32-bit fields (the manifest has no groups).
"""


def _varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return n, i


def _enc_varint(n):
    out = bytearray()
    while True:
        c = n & 0x7F
        n >>= 7
        out.append(c | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode(b):
    """A message as a list of [field, wire type, value] (an int, or bytes)."""
    out, i = [], 0
    while i < len(b):
        key, i = _varint(b, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt} at byte {i}")
        out.append([field, wt, v])
    return out


def encode(fields):
    out = bytearray()
    for field, wt, v in fields:
        out += _enc_varint(field << 3 | wt)
        if wt == 0:
            out += _enc_varint(v)
        elif wt == 2:
            out += _enc_varint(len(v)) + v
        else:
            out += v
    return bytes(out)


def _nth(fields, field, n=0):
    return [f for f in fields if f[0] == field][n]


def _set_nested(fields, path, value):
    """Sets the field at `path` ((field, occurrence) pairs, the last one a scalar)."""
    (field, n), rest = path[0], path[1:]
    f = _nth(fields, field, n)
    if not rest:
        f[2] = value.encode() if isinstance(value, str) else value
        return
    inner = decode(f[2])
    _set_nested(inner, rest, value)
    f[2] = encode(inner)


# Manifest tags: 8 cpu_features, 9 inputs, 10 outputs, 11 weights_sha256; TensorSpec:
# 1 name, 2 dtype, 3 shape; DimSpec: 1 fixed.
EDITS = {
    "no_outputs": lambda m: [f for f in m if f[0] != 10],
    "input_shape": lambda m: _set_nested(m, [(9, 0), (3, 1), (1, 0)], 10_000) or m,
    "input_dtype": lambda m: _set_nested(m, [(9, 0), (2, 0)], "f64") or m,
    "output_name": lambda m: _set_nested(m, [(10, 0), (1, 0)], "other") or m,
    "weights_hash": lambda m: _set_nested(m, [(11, 0)], "0" * 64) or m,
    "cpu_features": lambda m: _set_nested(m, [(8, 0)], _nth(m, 8)[2].decode() + f",+{FEATURE[0]}") or m,
}

# The feature the cpu_features edit adds (LLVM's name): set by the caller to one the
# machine lacks.
FEATURE = ["avx512fp16"]


MAGIC = b"DLCMANI\x01"


def edit(path, how):
    """Rewrites the manifest file `path` (magic bytes, then the message) with edit `how`
    (a key of EDITS)."""
    with open(path, "rb") as f:
        raw = f.read()
    assert raw.startswith(MAGIC), "not a dlc manifest"
    m = EDITS[how](decode(raw[len(MAGIC):]))
    with open(path, "wb") as f:
        f.write(MAGIC + encode(m))
