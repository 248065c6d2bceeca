"""RE2 syntax: the recogniser agrees with RE2 (checked against the real RE2 when google-re2 is installed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_ctl.resources.regex import re2_problem, regex_problem

# (pattern, RE2's verdict: None = accepted, else its error text), as the real RE2 reports them.
CORPUS = [
    (r"/payment\.PaymentService/(Charge|Refund)", None),
    (r"^(.*?;)?(user=jason)(;.*)?$", None),
    (r"[[:alpha:]]+\d{2,3}", None),
    (r"(?P<name>a)(?<other>b)", None),
    (r"\pL\p{Greek}\P{^Han}", None),
    (r"(?i)abc(?-i:d)", None),
    (r"\Q.*\E*", None),
    (r"\_", None),
    (r"[\d-z]", None),
    (r"a{,3}", None),
    (r"{03}", None),
    (r"a(?)*", None),
    (r"a*(?i)*", None),
    (r"(?i)*", "no argument for repetition operator: *"),
    (r"(?=x)", "invalid perl operator: (?="),
    (r"(?!x)", "invalid perl operator: (?!"),
    (r"(?<=x)", "invalid perl operator: (?<="),
    (r"(a)\1", "invalid escape sequence: \\1"),
    (r"(?P=n)", "invalid perl operator: (?P"),
    (r"(?#comment)", "invalid perl operator: (?#"),
    (r"(?x)a b", "invalid perl operator: (?x"),
    (r"a++", "bad repetition operator: ++"),
    (r"a{2}{3}", "bad repetition operator: {2}{3}"),
    (r"a{1001}", "invalid repetition size: {1001}"),
    (r"*a", "no argument for repetition operator: *"),
    (r"\Z", "invalid escape sequence: \\Z"),
    (r"\u0041", "invalid escape sequence: \\u"),
    (r"[z-a]", "invalid character class range: z-a"),
    (r"[a-\d]", "invalid escape sequence: \\d"),
    (r"[[:foo:]]", "invalid character class range: [:foo:]"),
    (r"\p{Foo}", "invalid character class range: \\p{Foo}"),
    (r"((a)", "missing ): ((a)"),
    (r"a)", "unexpected ): a)"),
    (r"[a", "missing ]: [a"),
    ("\\", "trailing \\"),
]


@pytest.mark.parametrize(("pattern", "verdict"), CORPUS, ids=[c[0] for c in CORPUS])
def test_re2_verdicts(pattern: str, verdict: str | None) -> None:
    assert re2_problem(pattern) == verdict


def test_regex_problem_adds_istio_and_pyproxy_rules() -> None:
    assert regex_problem("") == "regex string match should not be empty"
    assert regex_problem("a" * 1025) == "regex is too large, max length allowed is 1024"
    assert regex_problem(r"/payment\..+") is None
    # Valid RE2 that Python's re (pyproxy's engine) cannot compile: refused at apply time, not NACKed later.
    problem = regex_problem(r"\pL+")
    assert problem is not None and problem.startswith("valid RE2, but pyproxy's regex engine (Python re)")


def _real_re2() -> object:
    return pytest.importorskip("re2", reason="google-re2 (the real RE2) is not installed")


def test_corpus_matches_the_real_re2() -> None:
    real = _real_re2()
    options = real.Options()  # type: ignore[attr-defined]
    options.log_errors = False
    for pattern, verdict in CORPUS:
        try:
            real.compile(pattern, options)  # type: ignore[attr-defined]
            got = None
        except Exception as err:  # re2.error
            got = err.args[0].decode() if isinstance(err.args[0], bytes) else str(err.args[0])
        assert got == verdict, pattern


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="ab()[]{}*+?|\\^$.-:=!<>P?iU0123,_zZdxQEpL", max_size=8))
def test_generated_patterns_get_the_real_re2_verdict(pattern: str) -> None:
    real = _real_re2()
    options = real.Options()  # type: ignore[attr-defined]
    options.log_errors = False
    try:
        real.compile(pattern, options)  # type: ignore[attr-defined]
        accepted = True
    except Exception:
        accepted = False
    assert (re2_problem(pattern) is None) == accepted
