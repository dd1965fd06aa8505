"""sotto from Python, with ctypes only: two members form a room, exchange a sealed frame,
and compare safety codes. Usage: python3 sotto_demo.py path/to/libsotto_ffi.so"""

import ctypes
import sys

OK, BUFFER_TOO_SMALL, EMPTY = 0, 5, 8

lib = ctypes.CDLL(sys.argv[1])
u8p = ctypes.POINTER(ctypes.c_uint8)
size = ctypes.c_size_t
handle = ctypes.c_void_p
hp = ctypes.POINTER(handle)
sp = ctypes.POINTER(size)
u64 = ctypes.c_uint64
# Argument types (sizes are size_t, times uint64_t): without them ctypes passes ints.
for name, args in {
    "sotto_last_error": [ctypes.c_char_p, size, sp],
    "sotto_identity_new": [ctypes.c_char_p, size, hp],
    "sotto_identity_key_package": [handle, u8p, size, sp],
    "sotto_identity_free": [handle],
    "sotto_room_create": [handle, hp],
    "sotto_room_join": [handle, ctypes.c_char_p, size, hp],
    "sotto_room_invite": [handle, ctypes.POINTER(u8p), sp, size],
    "sotto_room_confirm": [handle],
    "sotto_room_welcome": [handle, u8p, size, sp],
    "sotto_room_take_keys": [handle, hp],
    "sotto_room_safety_code": [handle, u8p, size, sp],
    "sotto_room_free": [handle],
    "sotto_keys_free": [handle],
    "sotto_media_new": [hp],
    "sotto_media_apply": [handle, handle, u64],
    "sotto_media_seal": [handle, ctypes.c_uint8, ctypes.c_char_p, size, u8p, size, sp, u64],
    "sotto_media_open": [handle, u8p, size, u8p, size, sp, ctypes.POINTER(ctypes.c_uint32), u64],
    "sotto_media_free": [handle],
}.items():
    getattr(lib, name).argtypes = args
    getattr(lib, name).restype = ctypes.c_int


def check(status, what):
    if status != OK:
        msg = ctypes.create_string_buffer(256)
        n = size()
        lib.sotto_last_error(msg, 256, ctypes.byref(n))
        raise RuntimeError(f"{what}: status {status}: {msg.value.decode()}")


def take(fn, *args):
    """Calls an (out, cap, written) function twice: a size query, then the copy."""
    n = size()
    status = fn(*args, None, 0, ctypes.byref(n))
    if status not in (OK, BUFFER_TOO_SMALL):
        check(status, fn.__name__)
    buf = (ctypes.c_uint8 * n.value)()
    check(fn(*args, ctypes.cast(buf, u8p), n.value, ctypes.byref(n)), fn.__name__)
    return bytes(buf[: n.value])


def identity(name):
    h = handle()
    check(lib.sotto_identity_new(name, len(name), ctypes.byref(h)), "identity")
    return h


def media_with_keys(room, now_ms):
    media = handle()
    check(lib.sotto_media_new(ctypes.byref(media)), "media")
    while True:
        keys = handle()
        status = lib.sotto_room_take_keys(room, ctypes.byref(keys))
        if status == EMPTY:
            return media
        check(status, "take keys")
        check(lib.sotto_media_apply(media, keys, now_ms), "apply")
        lib.sotto_keys_free(keys)


alice_id, bob_id = identity(b"alice"), identity(b"bob")
bob_kp = take(lib.sotto_identity_key_package, bob_id)

alice = handle()
check(lib.sotto_room_create(alice_id, ctypes.byref(alice)), "create")
kps = (u8p * 1)(ctypes.cast(ctypes.c_char_p(bob_kp), u8p))
lens = (size * 1)(len(bob_kp))
check(lib.sotto_room_invite(alice, kps, lens, 1), "invite")
check(lib.sotto_room_confirm(alice), "confirm")
welcome = take(lib.sotto_room_welcome, alice)

bob = handle()
check(lib.sotto_room_join(bob_id, welcome, len(welcome), ctypes.byref(bob)), "join")
alice_media, bob_media = media_with_keys(alice, 0), media_with_keys(bob, 0)

# After the switch delay (1 s), Alice seals in the room's epoch and Bob opens.
now = 2000
payload = b"hello from python"
sealed = (ctypes.c_uint8 * 256)()
n = size()
check(lib.sotto_media_seal(alice_media, 0, payload, len(payload), ctypes.cast(sealed, u8p), 256,
                           ctypes.byref(n), now), "seal")
opened = (ctypes.c_uint8 * 256)()
m, leaf = size(), ctypes.c_uint32()
check(lib.sotto_media_open(bob_media, ctypes.cast(sealed, u8p), n, ctypes.cast(opened, u8p), 256,
                           ctypes.byref(m), ctypes.byref(leaf), now), "open")
assert bytes(opened[: m.value]) == payload, "payload differs"

codes = [take(lib.sotto_room_safety_code, r).rstrip(b"\0").decode() for r in (alice, bob)]
assert codes[0] == codes[1], codes
print(f"python: bob opened {m.value} bytes from leaf {leaf.value}; safety code {codes[0]}")

for h in (alice_media, bob_media):
    lib.sotto_media_free(h)
for h in (alice, bob):
    lib.sotto_room_free(h)
for h in (alice_id, bob_id):
    lib.sotto_identity_free(h)
print("python: ok")
