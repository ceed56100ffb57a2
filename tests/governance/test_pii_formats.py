"""PII formats: grouped card numbers, checked national ids, more phone formats, and
numeric columns that hold identifiers; each planted format is found, and look-alikes
that fail the check digit (or are ordinary numbers) are not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from governance.checks import CheckConfig, Finding, FindingType, scan
from governance.checks.pii import _dni, _luhn, _nir, _verhoeff

N = 400
RNG = np.random.default_rng(30)


def digits(n: int, first: str = "123456789") -> str:
    return str(RNG.choice(list(first))) + "".join(RNG.choice(list("0123456789"), n - 1))


def completed(body: str, check) -> str:
    """``body`` plus the check digit that ``check`` accepts (and only that one)."""
    passing = [d for d in "0123456789" if check(body + d)]
    assert len(passing) == 1
    return body + passing[0]


def failing(body: str, check) -> str:
    return body + next(d for d in "0123456789" if not check(body + d))


def luhn_reference(number: str) -> bool:
    """Luhn written independently: double every second digit from the right, sum digits."""
    total = 0
    for i, d in enumerate(int(c) for c in reversed(number)):
        total += sum(divmod(d * 2, 10)) if i % 2 else d
    return total % 10 == 0


def test_check_digit_functions_against_known_values() -> None:
    assert _luhn("4111111111111111") and not _luhn("4111111111111112")
    assert all(_luhn(n) == luhn_reference(n) for n in (digits(16) for _ in range(200)))
    assert _verhoeff("2363") and not _verhoeff("2364")  # the standard worked example
    assert _dni("12345678Z") and not _dni("12345678A") and _dni("X1234567L")
    body = "1850578006084"
    assert _nir(body + f"{97 - int(body) % 97:02d}") and not _nir(body + "00")


def grouped(number: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(number[at : at + size])
        at += size
    return sep.join(parts)


def frame() -> pd.DataFrame:
    card = [completed("4" + digits(14, "0123456789"), _luhn) for _ in range(N)]
    amex = [completed("37" + digits(12, "0123456789"), _luhn) for _ in range(N)]
    sin = [completed(digits(8, "1234567"), _luhn) for _ in range(N)]
    aadhaar = [completed(digits(11, "23456789"), _verhoeff) for _ in range(N)]
    bad_aadhaar = [failing(digits(11, "23456789"), _verhoeff) for _ in range(N)]
    bad_sin = [failing(digits(8, "1234567"), _luhn) for _ in range(N)]
    dni = [f"{n:08d}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}" for n in RNG.integers(0, 10**8, N)]
    return pd.DataFrame(
        {
            # A text field holding a grouped card, then its expiry: no stitching across.
            "payment": [
                f"card {grouped(c, (4, 4, 4, 4), ' ')} exp {RNG.integers(1, 12):02d}29"
                for c in card
            ],
            "amex": [grouped(c, (4, 6, 5), "-") for c in amex],
            "sin": [grouped(s, (3, 3, 3), " ") for s in sin],
            "aadhaar": [grouped(a, (4, 4, 4), " ") for a in aadhaar],
            "dni": dni,
            "uk_phone": [
                f"020 {RNG.integers(7000, 8999)} {RNG.integers(1000, 9999)}" for _ in range(N)
            ],
            "fr_phone": [
                "06 " + " ".join(f"{RNG.integers(0, 99):02d}" for _ in range(4)) for _ in range(N)
            ],
            # Look-alikes: wrong check digits, dates, amounts, codes.
            "bad_aadhaar": [grouped(a, (4, 4, 4), " ") for a in bad_aadhaar],
            "bad_sin": [grouped(s, (3, 3, 3), " ") for s in bad_sin],
            "when": [f"2023-{RNG.integers(1, 12):02d}-{RNG.integers(1, 28):02d}" for _ in range(N)],
            "amount": [f"{RNG.integers(1000, 99999)}.{RNG.integers(0, 99):02d}" for _ in range(N)],
            # Numbers: an account number nobody declared, and ordinary whole numbers.
            "account": RNG.choice(np.arange(10**7, 10**8), size=N, replace=False),
            "steps": RNG.integers(0, 30_000, size=N),
            # Dates as yyyymmdd numbers: fixed width and distinct, yet no identifier.
            "day": pd.date_range("2001-01-01", periods=N).strftime("%Y%m%d").astype(int),
            "label": RNG.integers(0, 2, size=N),
        }
    )


@pytest.fixture(scope="module")
def findings() -> list[Finding]:
    data = frame()
    train, test = (
        data[: N * 3 // 4].reset_index(drop=True),
        data[N * 3 // 4 :].reset_index(drop=True),
    )
    found = scan(train, test, config=CheckConfig(label="label"))
    return [f for f in found if f.type is FindingType.pii]


def test_each_format_is_found_in_its_column(findings: list[Finding]) -> None:
    kinds = {f.columns[0]: f.detail for f in findings}
    assert set(kinds) == {
        "payment",
        "amex",
        "sin",
        "aadhaar",
        "dni",
        "uk_phone",
        "fr_phone",
        "account",
    }
    for column in ("payment", "amex"):
        assert "payment card numbers" in kinds[column]
    for column in ("sin", "aadhaar", "dni"):
        assert "national ID numbers" in kinds[column]
    for column in ("uk_phone", "fr_phone"):
        assert "phone numbers" in kinds[column]
    assert "identifier" in kinds["account"]
    assert all(f.count == N for f in findings)
