"""Unified social credit codes (统一社会信用代码, GB 32100-2015).

Layout of the 18 characters:

====== ============================================================
1      registration authority (登记管理部门), e.g. 9 = 工商 (market regulation)
2      entity type (机构类别), e.g. 1 = enterprise, 2 = individual business,
       3 = farmers' co-operative (for authority 9)
3-8    administrative region code (GB/T 2260) of the registering authority
9-17   organisation code (主体标识码, GB 11714): 8 characters + 1 check character
18     check character over characters 1-17 (mod 31)
====== ============================================================

Early pilot codes (e.g. Xiamen 2015) exist that fail the check although they are legally
issued; `validate` reports them as invalid, callers that import registries should warn, not
reject.
"""

from __future__ import annotations

import numpy as np

# I, O, Z, S and V are left out so that codes cannot be misread.
ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}
_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)  # 3^i mod 31

# GB 11714 (organisation code): digits 0-9, letters A-Z valued 10-35 (the full Latin alphabet;
# inside a credit code only the letters of ALPHABET can occur).
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_BODY = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def _org_value(ch: str) -> int:
    return int(ch) if ch.isdigit() else ord(ch) - ord("A") + 10


def check_char(first17: str) -> str:
    """The 18th (check) character for the first 17 characters of a code."""
    if len(first17) != 17:
        raise ValueError(f"need 17 characters, got {len(first17)}")
    try:
        total = sum(_VALUE[ch] * w for ch, w in zip(first17, _WEIGHTS, strict=True))
    except KeyError as exc:
        raise ValueError(f"illegal character {exc.args[0]!r}") from exc
    return ALPHABET[(31 - total % 31) % 31]


def organization_check_char(body8: str) -> str:
    """The 9th (check) character of a GB 11714 organisation code for its first 8 characters."""
    if len(body8) != 8:
        raise ValueError(f"need 8 characters, got {len(body8)}")
    total = sum(_org_value(ch) * w for ch, w in zip(body8, _ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return {10: "X", 11: "0"}.get(c, str(c))


def organization_code_valid(code: str) -> bool:
    """Whether characters 9-17 of a credit code form a valid GB 11714 organisation code.

    Not part of `validate`: the standard only requires the mod-31 check, and codes of
    individual businesses do not always carry a valid organisation code.
    """
    org = code[8:17]
    if len(org) != 9 or any(ch not in _VALUE for ch in org):
        return False
    return organization_check_char(org[:8]) == org[8]


def validate(code: str) -> str | None:
    """None when `code` is a well-formed credit code, else a short reason in Chinese."""
    if len(code) != 18:
        return f"长度应为18位，实际{len(code)}位"
    for pos, ch in enumerate(code, start=1):
        if ch not in _VALUE:
            return f"第{pos}位含非法字符“{ch}”"
    if not code[2:8].isdigit():
        return "第3-8位应为行政区划代码（数字）"
    expected = check_char(code[:17])
    if code[17] != expected:
        return f"校验码错误，应为{expected}"
    return None


def is_valid(code: str) -> bool:
    """Whether `code` passes `validate`."""
    return validate(code) is None


def region_code(code: str) -> str:
    """Characters 3-8: the GB/T 2260 code of the authority that registered the entity.

    This is the region *at registration* and never changes afterwards: an entity registered in
    港闸区 (320611) keeps that code after 港闸 was merged into 崇川区 (320613), and an entity that
    moved keeps its old code. It says nothing about today's jurisdiction; locate the entity by
    its coordinates instead.
    """
    return code[2:8]


def generate(
    rng: np.random.Generator, region_code: str, authority: str = "9", kind: str = "1"
) -> str:
    """A random, well-formed credit code (organisation code part valid too).

    About half of the organisation codes look like the "MA…" codes assigned since 2015, the
    rest like pre-2015 numeric organisation codes.
    """
    if len(region_code) != 6 or not region_code.isdigit():
        raise ValueError(f"region code must be 6 digits: {region_code!r}")
    if authority not in _VALUE or kind not in _VALUE:
        raise ValueError("authority and kind must be characters of the code alphabet")
    if rng.random() < 0.5:
        tail = "".join(_ORG_BODY[i] for i in rng.integers(0, len(_ORG_BODY), size=6))
        body = "MA" + tail
    else:
        body = "".join(str(d) for d in rng.integers(0, 10, size=8))
        if body[0] == "0":
            body = "1" + body[1:]
    first17 = authority + kind + region_code + body + organization_check_char(body)
    return first17 + check_char(first17)
