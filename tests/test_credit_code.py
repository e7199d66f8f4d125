"""Unified social credit codes (GB 32100-2015)."""

from __future__ import annotations

import numpy as np
import pytest

from layers import credit_code

# Published codes that pass the check:
# - 91350100M000100Y43: the example printed in GB 32100-2015 itself, quoted as "官方示例" in
#   bluesky335/IDCheck (main.go) and in many validators' docs;
# - 91310110666007217T, 91310115591693856A: dromara/hutool,
#   hutool-core/src/test/java/cn/hutool/core/util/CreditCodeUtilTest.java;
# - 914403001922038216 (华为技术有限公司), 9135020026015919XW (厦门象屿集团有限公司),
#   91120222MA06DG3067: test data of bluesky335/IDCheck (main.go).
VALID = (
    "91350100M000100Y43",
    "91310110666007217T",
    "91310115591693856A",
    "914403001922038216",
    "9135020026015919XW",
    "91120222MA06DG3067",
)

# Early pilot codes (Fujian, 2015) that are legally issued but fail the standard's check, with
# the check characters their sources compute: bluesky335/IDCheck (README.md, USCI/USCI_test.go)
# and dromara/hutool CreditCodeUtilTest.java (isCreditCode2).
PILOT_CODES = (
    ("91350100M0001TGQXM", "1"),
    ("91350211M0000XUF46", "R"),
    ("91350203M0001FUE2P", "J"),
    ("91350211M00013FA1N", "3"),
)


@pytest.mark.parametrize("code", VALID)
def test_published_codes_are_valid(code: str) -> None:
    assert credit_code.validate(code) is None
    assert credit_code.is_valid(code)
    assert credit_code.check_char(code[:17]) == code[17]


@pytest.mark.parametrize(("code", "expected"), PILOT_CODES)
def test_pilot_codes_report_the_expected_check_character(code: str, expected: str) -> None:
    assert credit_code.validate(code) == f"校验码错误，应为{expected}"
    assert not credit_code.is_valid(code)


def test_wrong_length() -> None:
    assert credit_code.validate("91350100M000100Y4") == "长度应为18位，实际17位"
    assert credit_code.validate("") == "长度应为18位，实际0位"
    assert credit_code.validate("91350100M000100Y433") == "长度应为18位，实际19位"


@pytest.mark.parametrize(("code", "pos", "char"), [
    ("91350100M000100Y4O", 18, "O"),  # O is excluded from the alphabet
    ("9I350100M000100Y43", 2, "I"),
    ("91350100m000100Y43", 9, "m"),  # lower case is not accepted
    ("91350100S000100Y43", 9, "S"),
])
def test_illegal_character(code: str, pos: int, char: str) -> None:
    assert credit_code.validate(code) == f"第{pos}位含非法字符“{char}”"


def test_region_must_be_digits() -> None:
    code = "91A50100M000100Y4"
    code += credit_code.check_char(code)
    assert credit_code.validate(code) == "第3-8位应为行政区划代码（数字）"


def test_wrong_check_character() -> None:
    assert credit_code.validate("91350100M000100Y44") == "校验码错误，应为3"


def test_region_code_is_registration_region() -> None:
    assert credit_code.region_code("91350100M000100Y43") == "350100"
    assert "registration" in (credit_code.region_code.__doc__ or "")


def test_organization_code_check() -> None:
    # GB 11714 check character of the organisation code part (characters 9-17).
    assert credit_code.organization_check_char("M000100Y") == "4"
    assert credit_code.organization_code_valid("914403001922038216")
    assert credit_code.organization_code_valid("9135020026015919XW")  # 'X' = check value 10


def test_check_char_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        credit_code.check_char("123")
    with pytest.raises(ValueError):
        credit_code.check_char("9135010OM000100Y4")


@pytest.mark.parametrize("region", ["320612", "320602", "320611", "320684", "320600"])
def test_generated_codes_are_valid(region: str) -> None:
    rng = np.random.default_rng(7)
    for kind in ("1", "2", "3"):
        for _ in range(300):
            code = credit_code.generate(rng, region, kind=kind)
            assert credit_code.validate(code) is None, code
            assert credit_code.organization_code_valid(code), code
            assert credit_code.region_code(code) == region
            assert code[:2] == "9" + kind


def test_generate_is_deterministic() -> None:
    a = [credit_code.generate(np.random.default_rng(1), "320613") for _ in range(3)]
    b = [credit_code.generate(np.random.default_rng(1), "320613") for _ in range(3)]
    assert a == b


def test_generate_rejects_bad_region() -> None:
    with pytest.raises(ValueError):
        credit_code.generate(np.random.default_rng(1), "3206")
