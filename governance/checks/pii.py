"""Values that look like personal data in string columns not declared as PII.

Findings name the column, the kinds of data and the rows, never the values:
a report must not become a second copy of the personal data it warns about.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.frames import ColumnKind, ScanContext
from governance.checks.registry import detector, make_finding, share
from governance.checks.similarity import utf8_array


class PiiKind(StrEnum):
    email = "email addresses"
    phone = "phone numbers"
    national_id = "national ID numbers"
    payment_card = "payment card numbers"


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Numbers need separators or a leading "+" or "0", so bare digit runs (order
# numbers, ids) do not count.
_PHONE = re.compile(
    # North American: (555) 555-0100, 555-555-0100, +1 555 555 0100.
    r"(?<![\d+])(?:\+?1[-.\s]?)?(?:\(\d{3}\)\s?|\d{3}[-.\s])\d{3}[-.\s]\d{4}(?!\d)"
    # International, with its leading "+": +44 20 7946 0958, +33 6 12 34 56 78.
    r"|(?<![\w+])\+\d(?:[\s().-]?\d){7,14}(?!\d)"
    # National, with a trunk "0" and two separators: 020 7946 0958, 030 1234 5678.
    r"|(?<![\w.-])0\d{1,4}[ -]\d{3,4}[ -]\d{3,4}(?![\w-])"
    # French pairs (06 12 34 56 78) and UK mobiles (07700 900123).
    r"|(?<![\w.-])0[1-9](?:[ .]\d{2}){4}(?![\w.])"
    r"|(?<![\w-])07\d{3} \d{6}(?!\w)"
)
_NATIONAL_ID = re.compile(
    # US SSN, without the never-issued areas 000, 666 and 9xx, group 00 or serial 0000.
    r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])"
    # UK National Insurance number.
    r"|(?<![A-Za-z0-9])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r"\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D](?![A-Za-z0-9])"
)
# Cards: 13-19 digits in one run, or in the printed groups (4-4-4-4, 4-4-4-4-3,
# Amex 4-6-5) with one separator throughout, so that separate numbers in a
# text ("4111 1111 1111 1111 exp 1229") are not stitched together.
_CARD = re.compile(
    r"(?<![\d-])(?:\d{13,19}"
    r"|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?"
    r"|\d{4}([ -])\d{6}\2\d{5})(?![\d])"
)
_NON_DIGIT = re.compile(r"\D")
_SEPARATORS = re.compile(r"[\s.-]")
# Every pattern above needs an "@" or 6+ digits in one run of digits and
# separators (NINO "AB123456C", phone "(555) 555-0100"). Finding such runs in
# one compiled pass over all values (RE2, through arrow) spares most values the
# Python regexes, which cost microseconds each.
_MIN_DIGITS = 6
# An "@", or _MIN_DIGITS digits with only separators (or NUL) between them.
_CANDIDATE = rf"@|[0-9](?:[ \t().+\x00-]*[0-9]){{{_MIN_DIGITS - 1}}}"
# A numeric column is read as an identifier only over this many values, and
# when its typical value has five or more digits (see ``_identifier_column``).
_MIN_IDENTIFIER_ROWS = 100
_MIN_IDENTIFIER_VALUE = 10_000
# A random digit string passes the Luhn check one time in ten.
_LUHN_CHANCE = 0.1
# Sample enough rows that a column at the reporting threshold shows about this
# many matches: a column without any match in the sample is then below the
# threshold with probability 1 - e^-20.
_EXPECTED_SAMPLE_HITS = 20


@detector(FindingType.pii)
def pii(ctx: ScanContext) -> list[Finding]:
    # Declared personal data is governed as such; free text is scanned, but as
    # it is neither trained on nor recorded its findings are warnings.
    declared = {
        *ctx.config.pii_columns,
        *ctx.config.exclude_columns,
        ctx.roles.time_column,
        ctx.roles.id_column,
        ctx.roles.label,
    }
    findings = []
    for column in ctx.train.frame.columns:
        if column in declared:
            continue
        if _is_string(ctx, column):
            finding = _scan_column(ctx, column)
        elif ctx.roles.kinds.get(column) is ColumnKind.numeric:
            finding = _identifier_column(ctx, column)
        else:
            finding = None
        if finding is not None:
            findings.append(finding)
    return findings


def _identifier_column(ctx: ScanContext, column: str) -> Finding | None:
    """A numeric column of fixed-width whole numbers, mostly distinct: an undeclared identifier.

    Measurements have fractions or vary in width (0, 12, 30,000); counts and
    codes repeat. Record, account and person numbers are whole numbers of one
    width (five digits or more) that rarely repeat (a person's rows share
    one); models memorise them, and they can link a row back to a person.
    Dates written as yyyymmdd have a fixed width too and are left alone.
    """
    values = np.concatenate(
        [split.numbers[column] for split in (ctx.train, ctx.test) if column in split.numbers]
    )
    values = values[~np.isnan(values)]
    if len(values) < _MIN_IDENTIFIER_ROWS or values.min() < _MIN_IDENTIFIER_VALUE:
        return None
    if not (values == np.round(values)).all():
        return None
    width = np.floor(np.log10(values)).astype(np.int64)
    if (width != width[0]).any() or _all_dates(values):
        return None
    distinct = len(pd.unique(values))
    if distinct < ctx.config.identifier_column_fraction * len(values):
        return None
    return make_finding(
        ctx,
        FindingType.pii,
        # Trained on: the model memorises the ids (see above).
        Severity.critical,
        count=len(values),
        columns=[column],
        detail=(
            f"{column} holds whole numbers of {int(width[0]) + 1} digits each,"
            f" {share(distinct, len(values))} of them distinct: an identifier not declared as"
            " one; models memorise such values and they can link rows back to people."
            " Declare it (role identifier) or exclude it."
        ),
    )


def _all_dates(values: np.ndarray) -> bool:
    """Whether every value reads as a calendar date yyyymmdd between 1900 and 2199."""
    whole = values.astype(np.int64)
    year, month, day = whole // 10_000, whole // 100 % 100, whole % 100
    return bool(
        (
            (year >= 1900) & (year < 2200) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
        ).all()
    )


def _is_string(ctx: ScanContext, column: str) -> bool:
    kind = ctx.roles.kinds.get(column)
    if kind is not None:
        return kind in (ColumnKind.category, ColumnKind.text)
    return not any(
        pd.api.types.is_numeric_dtype(split.frame[column])
        or pd.api.types.is_datetime64_any_dtype(split.frame[column])
        for split in (ctx.train, ctx.test)
        if column in split.frame.columns
    )


def _scan_column(ctx: ScanContext, column: str) -> Finding | None:
    config = ctx.config
    values = {
        split.name: split.frame[column]
        for split in (ctx.train, ctx.test)
        if column in split.frame.columns  # test may lack it (compared on shared columns)
    }
    present = sum(int(v.notna().sum()) for v in values.values())
    if not present:
        return None
    sample_size = math.ceil(_EXPECTED_SAMPLE_HITS / config.pii_min_fraction)
    if present > sample_size and not _sample_matches(values, sample_size, present, config.seed):
        return None
    matches = {name: _matches(series) for name, series in values.items()}
    found: dict[PiiKind, int] = {}
    for kind in PiiKind:
        count = sum(int(m.kinds[kind].sum()) for m in matches.values())
        if count / present >= config.pii_min_fraction and _plausible(kind, matches.values()):
            found[kind] = count
    if not found:
        return None
    rows = {
        name: np.flatnonzero(np.logical_or.reduce([m.kinds[kind] for kind in found]))
        for name, m in matches.items()
    }
    none = np.empty(0, dtype=np.int64)
    train_rows, test_rows = rows.get("train", none), rows.get("test", none)
    count = len(train_rows) + len(test_rows)
    # Personal data in a column that is trained on or recorded ends up in the model
    # or the metadata: critical however few rows hold it. Free text is neither.
    text = column in config.text_columns
    critical = not text or count / present >= config.pii_critical_fraction
    where = "free text (not trained on or recorded)" if text else "trained on"
    return make_finding(
        ctx,
        FindingType.pii,
        Severity.critical if critical else Severity.warning,
        count=count,
        columns=[column],
        train_rows=train_rows,
        test_rows=test_rows,
        detail=(
            f"{column} ({where}) is not declared as PII, yet {share(count, present)} of its"
            f" values hold {', '.join(found)}; undeclared personal data escapes the controls on"
            " it. Declare it (custodian data add --text or --pii) or remove the values."
        ),
    )


def pii_kinds(values: pd.Series) -> list[PiiKind]:
    """The kinds of personal data any value of ``values`` holds (``data add`` asks this)."""
    matches = _matches(values)
    return [k for k in PiiKind if matches.kinds[k].any() and _plausible(k, [matches])]


def _sample_matches(values: dict[str, pd.Series], size: int, present: int, seed: int) -> bool:
    """Whether about ``size`` non-missing values, drawn at random, hold any match."""
    total = sum(len(series) for series in values.values())
    draw = min(total, math.ceil(size * total / present))
    picks = np.sort(np.random.default_rng(seed).choice(total, size=draw, replace=False))
    # The splits one after the other, as one column, without copying them into one.
    sample, first = [], 0
    for series in values.values():
        mine = picks[(picks >= first) & (picks < first + len(series))] - first
        sample.append(series.iloc[mine])
        first += len(series)
    found = _matches(pd.concat(sample, ignore_index=True).dropna())
    return any(hits.any() for hits in found.kinds.values())


@dataclass(frozen=True)
class _Matches:
    kinds: dict[PiiKind, np.ndarray]  # row masks; cards must also pass the Luhn check
    card_shaped: np.ndarray  # row mask of card-shaped values, Luhn-valid or not


def _matches(series: pd.Series) -> _Matches:
    """Classify each distinct candidate value once, then spread the result over the rows.

    The prefilter runs over every row in place (no per-value Python), so only
    candidate rows are factorised and read as Python strings.
    """
    rows = np.flatnonzero(_candidates(series))
    codes, uniques = pd.factorize(series.iloc[rows])
    kinds = {kind: np.zeros(len(uniques), dtype=bool) for kind in PiiKind}
    card_shaped = np.zeros(len(uniques), dtype=bool)
    for position, value in enumerate(uniques):
        text = str(value)
        kinds[PiiKind.email][position] = "@" in text and _EMAIL.search(text) is not None
        kinds[PiiKind.phone][position] = _PHONE.search(text) is not None
        kinds[PiiKind.national_id][position] = _NATIONAL_ID.search(text) is not None or any(
            check(_SEPARATORS.sub("", m[0]))
            for pattern, check in _CHECKED_IDS
            for m in pattern.finditer(text)
        )
        cards = [d for m in _CARD.finditer(text) if _card_prefix(d := _NON_DIGIT.sub("", m[0]))]
        card_shaped[position] = bool(cards)
        kinds[PiiKind.payment_card][position] = any(_luhn(d) for d in cards)

    def spread(hits: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(series), dtype=bool)
        mask[rows] = hits[codes]
        return mask

    return _Matches({kind: spread(hits) for kind, hits in kinds.items()}, spread(card_shaped))


def _candidates(values: object) -> np.ndarray:
    """Mask of values holding an "@" or a run of ``_MIN_DIGITS`` digits (see above).

    One RE2 pass over the values where arrow keeps them, compiled and linear in time.
    """
    return pc.match_substring_regex(utf8_array(values), _CANDIDATE).to_numpy(zero_copy_only=False)


def _plausible(kind: PiiKind, matches: Iterable[_Matches]) -> bool:
    """Cards only count when Luhn passes far more often than it does for random digits."""
    if kind is not PiiKind.payment_card:
        return True
    matches = list(matches)
    valid = sum(int(m.kinds[kind].sum()) for m in matches)
    shaped = sum(int(m.card_shaped.sum()) for m in matches)
    spread = math.sqrt(shaped * _LUHN_CHANCE * (1 - _LUHN_CHANCE))
    return valid - _LUHN_CHANCE * shaped >= 3 * spread


def _card_prefix(digits: str) -> bool:
    """Issuer ranges of the major networks (Visa, Mastercard, Amex, Discover, JCB, Diners)."""
    return digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def _verhoeff(digits: str) -> bool:
    check = 0
    for i, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[i % 8][int(char)]]
    return check == 0


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _dni(text: str) -> bool:
    """Spanish DNI (8 digits) or NIE (X/Y/Z + 7 digits) and its check letter."""
    body = text[:-1].upper()
    body = str("XYZ".index(body[0])) + body[1:] if body[0] in "XYZ" else body
    return _DNI_LETTERS[int(body) % 23] == text[-1].upper()


def _nir(digits: str) -> bool:
    """French NIR (INSEE number): 13 digits and a key of 97 - (number mod 97)."""
    body = digits[:13].upper().replace("2A", "19").replace("2B", "18")
    return 97 - int(body) % 97 == int(digits[13:])


# National ids whose check digit (or letter) is verified before they count,
# each (pattern, check) over the match with separators removed.
_CHECKED_IDS: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (
    # Canadian SIN, printed in groups of three, Luhn-checked.
    (re.compile(r"(?<![\d-])[1-7]\d{2}([ -])\d{3}\1\d{3}(?![\d-])"), _luhn),
    # Indian Aadhaar, printed 4-4-4 (never starting 0 or 1), Verhoeff-checked.
    (re.compile(r"(?<![\d-])[2-9]\d{3}([ -])\d{4}\1\d{4}(?![\d-])"), _verhoeff),
    # Spanish DNI / NIE with its check letter.
    (re.compile(r"(?<![A-Za-z0-9])(?:\d{8}|[XYZxyz]\d{7})-?[A-Za-z](?![A-Za-z0-9])"), _dni),
    # French NIR: sex, year, month, department, commune, serial, key.
    (
        re.compile(
            r"(?<![\d])[12] ?\d{2} ?(?:0[1-9]|1[0-2]|20) ?(?:\d{2}|2[AB])"
            r" ?\d{3} ?\d{3} ?\d{2}(?!\d)"
        ),
        _nir,
    ),
)
