"""schemathesis hooks for scripts/fuzz-api: what the API description cannot say by itself.

- Passwords. The description gives a new password's length and characters; the rest of the
  policy (an upper-case letter, a lower-case letter, a digit, a special character, and not
  guessable by zxcvbn) is no JSON Schema. So a password the run generates that fits the schema
  is swapped, just before it is sent, for a random one that also meets the rest: schema-valid
  requests stay valid, and schema-violating ones (too short, a control character, not a string)
  stay as generated.
- The bearer token. `POST /auth/logout` revokes the token it is sent with, so each of its calls
  gets a fresh token of the run's account (`shopctl tokens mint`, as SHOPGATE_FUZZ_MINT says);
  every other operation gets the run's token (SHOPGATE_FUZZ_TOKEN). Given here rather than with
  `-H`, which would override both.
"""

import json
import os
import random
import re
import shlex
import string
import subprocess

import schemathesis
from hypothesis import strategies as st

SPECIAL = "!#%&*+-.:;<=>?@^_~"
# What the description says of a new password (length, no control characters).
FITS_SCHEMA = re.compile(r"[^\x00-\x1f\x7f-\x9f]{8,128}")
NEW_PASSWORDS = {"/auth/register": "password", "/auth/change-password": "new_password"}


def strong_password(seed: int) -> str:
    rng = random.Random(seed)
    body = "".join(rng.choice(string.ascii_letters + string.digits + SPECIAL) for _ in range(rng.randint(12, 40)))
    classes = [rng.choice(c) for c in (string.ascii_uppercase, string.ascii_lowercase, string.digits, SPECIAL)]
    return "".join(classes) + body


# Format `password`, where generation uses formats.
schemathesis.openapi.format("password", st.integers(min_value=0, max_value=2**32).map(strong_password))


@schemathesis.hook
def before_call(context, case, kwargs):
    field = NEW_PASSWORDS.get(case.operation.path)
    if field and case.method.upper() == "POST" and isinstance(case.body, dict):
        value = case.body.get(field)
        if isinstance(value, str) and FITS_SCHEMA.fullmatch(value):
            case.body = {**case.body, field: strong_password(hash(value) & 0xFFFFFFFF)}


@schemathesis.auth(refresh_interval=None).apply_to(path="/auth/logout")
class FreshToken:
    def get(self, case, ctx):
        out = subprocess.run(shlex.split(os.environ["SHOPGATE_FUZZ_MINT"]), capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["access_token"]

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.auth().skip_for(path="/auth/logout")
class RunToken:
    def get(self, case, ctx):
        return os.environ["SHOPGATE_FUZZ_TOKEN"]

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
