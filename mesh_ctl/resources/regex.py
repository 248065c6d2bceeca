"""Is this an RE2 regex (Istio's and Envoy's engine), and can pyproxy (Python ``re``) run it?

:func:`re2_problem` is a small recogniser of RE2's syntax (``re2/parse.cc``): it does not build a program,
it only finds the first construct RE2 would reject and words it as RE2 does (``invalid perl operator: (?=``,
``invalid escape sequence: \\Z``, ``invalid repetition size: {1001}``...). A test compares it with the real
RE2 (the ``google-re2`` package) on a corpus and on generated patterns when that package is installed.

:func:`regex_problem` is what validation calls: Istio's 1024-character limit, RE2 validity, then whether
Python ``re`` (what pyproxy matches with) compiles it, so a config that the proxies would NACK is refused
at apply time instead.
"""

from __future__ import annotations

import re

MAX_REGEX_LENGTH = 1024  # Istio validateStringRegexp
MAX_REPEAT = 1000  # RE2 kMaxRepeat

_FLAGS = set("imsU")
_SIMPLE_ESCAPES = set("afnrtv")
_CLASS_ESCAPES = set("dDsSwW")
_ASSERT_ESCAPES = set("bBAz")
_REPEAT = re.compile(r"\{(0|[1-9]\d*)(,(0|[1-9]\d*)?)?\}")  # RE2 refuses leading zeros: "{03}" is literal
_NAME = re.compile(r"[A-Za-z0-9_]+")
# Unicode classes RE2 knows for \p{...}: general categories, "Any" and the scripts (re2/unicode_groups.cc).
_UNICODE_GROUP_NAMES = """
    Any C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs
    Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum Bassa_Vah Batak Bengali Bhaiksuki
    Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal Carian Caucasian_Albanian Chakma Cham Cherokee
    Chorasmian Common Coptic Cuneiform Cypriot Cypro_Minoan Cyrillic Deseret Devanagari Dives_Akuru Dogra
    Duployan Egyptian_Hieroglyphs Elbasan Elymaic Ethiopic Georgian Glagolitic Gothic Grantha Greek Gujarati
    Gunjala_Gondi Gurmukhi Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew Hiragana Imperial_Aramaic Inherited
    Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi Kannada Katakana Kawi Kayah_Li Kharoshthi
    Khitan_Small_Script Khmer Khojki Khudawadi Lao Latin Lepcha Limbu Linear_A Linear_B Lisu Lycian Lydian
    Mahajani Makasar Malayalam Mandaic Manichaean Marchen Masaram_Gondi Medefaidrin Meetei_Mayek Mende_Kikakui
    Meroitic_Cursive Meroitic_Hieroglyphs Miao Modi Mongolian Mro Multani Myanmar Nabataean Nag_Mundari
    Nandinagari New_Tai_Lue Newa Nko Nushu Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Old_Hungarian Old_Italic
    Old_North_Arabian Old_Permic Old_Persian Old_Sogdian Old_South_Arabian Old_Turkic Old_Uyghur Oriya Osage
    Osmanya Pahawh_Hmong Palmyrene Pau_Cin_Hau Phags_Pa Phoenician Psalter_Pahlavi Rejang Runic Samaritan
    Saurashtra Sharada Shavian Siddham SignWriting Sinhala Sogdian Sora_Sompeng Soyombo Sundanese Syloti_Nagri
    Syriac Tagalog Tagbanwa Tai_Le Tai_Tham Tai_Viet Takri Tamil Tangsa Tangut Telugu Thaana Thai Tibetan
    Tifinagh Tirhuta Toto Ugaritic Vai Vithkuqi Wancho Warang_Citi Yezidi Yi Zanabazar_Square
"""
_UNICODE_GROUPS = frozenset(_UNICODE_GROUP_NAMES.split())
_POSIX = re.compile(r"\[:\^?(alnum|alpha|ascii|blank|cntrl|digit|graph|lower|print|punct|space|upper|word|xdigit):\]")


class _Bad(Exception):
    pass


def _escapable_punctuation(c: str) -> bool:
    return ord(c) < 0x80 and not c.isalnum()


def _escape(p: str, i: int, in_class: bool) -> int:
    """Check the escape at p[i] == '\\'; return the index after it."""
    if i + 1 >= len(p):
        raise _Bad("trailing \\")
    c = p[i + 1]
    j = i + 2
    if c in "1234567":
        if j < len(p) and p[j] in "01234567":  # octal \12; a single non-zero digit is a backreference
            return j + (1 if j + 1 < len(p) and p[j + 1] in "01234567" else 0) + 1
        raise _Bad(f"invalid escape sequence: \\{c}")
    if c == "0":
        for _ in range(2):
            if j < len(p) and p[j] in "01234567":
                j += 1
        return j
    if c == "x":
        if p[j : j + 1] == "{":
            end = p.find("}", j)
            digits = p[j + 1 : end] if end != -1 else ""
            if (
                end == -1
                or not digits
                or any(d not in "0123456789abcdefABCDEF" for d in digits)
                or (int(digits, 16) > 0x10FFFF)
            ):
                raise _Bad(f"invalid escape sequence: {p[i : end if end != -1 else len(p)]}")
            return end + 1
        digits = p[j : j + 2]
        if len(digits) < 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
            raise _Bad(f"invalid escape sequence: {p[i : j + 2]}")
        return j + 2
    if c in "pP":
        if p[j : j + 1] == "{":
            end = p.find("}", j)
            name = p[j + 1 : end].removeprefix("^") if end != -1 else ""
            if end == -1 or name not in _UNICODE_GROUPS:
                raise _Bad(f"invalid character class range: {p[i : end + 1 if end != -1 else len(p)]}")
            return end + 1
        if p[j : j + 1] not in ("C", "L", "M", "N", "P", "S", "Z") or j >= len(p):
            raise _Bad(f"invalid character class range: {p[i : j + 1]}")
        return j + 1
    if c in _SIMPLE_ESCAPES or c in _CLASS_ESCAPES:
        return j
    if not in_class and (c in _ASSERT_ESCAPES or c == "C"):
        return j
    if _escapable_punctuation(c):  # punctuation (and "_") can always be escaped
        return j
    raise _Bad(f"invalid escape sequence: \\{c}")


def _char_class(p: str, i: int) -> int:
    """p[i] == '['; return the index after the closing ']'."""
    start = i
    i += 1
    if p[i : i + 1] == "^":
        i += 1
    first = True
    while True:
        if i >= len(p):
            raise _Bad(f"missing ]: {p[start:]}")
        c = p[i]
        if c == "]" and not first:
            return i + 1
        first = False
        posix = _POSIX.match(p, i)
        if posix is not None:
            i = posix.end()
            continue
        if p.startswith("[:", i) and p.find(":]", i + 2) != -1:
            end = p.find(":]", i + 2)
            raise _Bad(f"invalid character class range: {p[i : end + 2]}")
        lo_start = i
        lo, i = _class_char(p, i)
        if p[i : i + 1] == "-" and p[i + 1 : i + 2] not in ("]", ""):
            if lo is None:  # "[\d-z]": no range; the "-" is a literal
                continue
            hi_start = i + 1
            hi, i = _class_char(p, hi_start)
            if hi is None:
                raise _Bad(f"invalid escape sequence: {p[hi_start:i]}")
            if hi < lo:
                raise _Bad(f"invalid character class range: {p[lo_start:i]}")


def _class_char(p: str, i: int) -> tuple[int | None, int]:
    """One class member at p[i]: (its code point, or None for \\d-like classes; index after it)."""
    if p[i] != "\\":
        return ord(p[i]), i + 1
    end = _escape(p, i, in_class=True)
    body = p[i + 1 : end]
    if body[:1] in ("d", "D", "s", "S", "w", "W", "p", "P"):
        return None, end
    if body[:1] in _SIMPLE_ESCAPES:
        return ord({"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}[body]), end
    if body[:1] == "x":
        digits = body[2:-1] if body.startswith("x{") else body[1:]
        return int(digits, 16), end
    if body[:1].isdigit():
        return int(body, 8), end
    return ord(body[0]), end


def _group_open(p: str, i: int) -> int:
    """p[i:i+2] == '(?'; return the index after the group's opening (the flags group may be complete)."""
    j = i + 2
    if p.startswith("P<", j) or (p.startswith("<", j) and not p.startswith(("<=", "<!"), j)):
        j += 2 if p[j] == "P" else 1
        m = _NAME.match(p, j)
        end = p.find(">", j)
        if end == -1:
            raise _Bad(f"invalid perl operator: {p[i:j]}")
        if m is None or end == -1 or m.end() != end:
            raise _Bad(f"invalid named capture group: {p[i : (end + 1) if end != -1 else len(p)]}")
        return end + 1
    if p.startswith(("<=", "<!"), j):
        raise _Bad(f"invalid perl operator: {p[i : j + 2]}")
    negated = False
    saw_flag = False
    while j < len(p):
        c = p[j]
        if c in _FLAGS:
            saw_flag = True
        elif c == "-" and not negated:
            negated = True
            saw_flag = False
        elif c in ":)":
            if negated and not saw_flag:
                raise _Bad(f"invalid perl operator: {p[i : j + 1]}")
            return j + 1
        else:
            raise _Bad(f"invalid perl operator: {p[i : j + 1]}")
        j += 1
    raise _Bad(f"invalid perl operator: {p[i:j]}" if j == i + 2 else f"missing ): {p[i:]}")


def re2_problem(pattern: str) -> str | None:
    """None if RE2 accepts ``pattern``, else RE2's reason (e.g. ``invalid perl operator: (?=``)."""
    try:
        _check(pattern)
    except _Bad as bad:
        return str(bad)
    return None


def _check(p: str) -> None:
    depth = 0
    i = 0
    can_repeat = False  # is there something a repetition operator could apply to?
    last_repeat = ""  # the previous token, when it was a repetition operator
    while i < len(p):
        c = p[i]
        if c == "\\":
            if p.startswith("\\Q", i):
                end = p.find("\\E", i + 2)
                literal = p[i + 2 : end] if end != -1 else p[i + 2 :]
                i = end + 2 if end != -1 else len(p)
                can_repeat, last_repeat = bool(literal), ""
                continue
            i = _escape(p, i, in_class=False)
            can_repeat, last_repeat = True, ""
            continue
        if c == "[":
            i = _char_class(p, i)
            can_repeat, last_repeat = True, ""
            continue
        if c == "(":
            if p.startswith("(?", i):
                end = _group_open(p, i)
                if p[end - 1] == ")":  # a flags group "(?i)" is transparent: "a(?i)*" repeats the "a"
                    i, last_repeat = end, ""
                    continue
                i = end
            else:
                i += 1
            depth += 1
            can_repeat, last_repeat = False, ""
            continue
        if c == ")":
            if depth == 0:
                raise _Bad(f"unexpected ): {p}")
            depth -= 1
            i += 1
            can_repeat, last_repeat = True, ""
            continue
        if c == "|":
            i += 1
            can_repeat, last_repeat = False, ""
            continue
        if c in "*+?" or (c == "{" and _REPEAT.match(p, i)):
            if c == "{":
                m = _REPEAT.match(p, i)
                assert m is not None
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
                op = m.group(0)
                if lo > MAX_REPEAT or hi > MAX_REPEAT or (hi != -1 and hi < lo):
                    raise _Bad(f"invalid repetition size: {op}")
                end = m.end()
            else:
                op, end = c, i + 1
            if p[end : end + 1] == "?":  # non-greedy
                op += "?"
                end += 1
            if last_repeat:
                raise _Bad(f"bad repetition operator: {last_repeat}{op}")
            if not can_repeat:
                raise _Bad(f"no argument for repetition operator: {op}")
            i, last_repeat = end, op
            continue
        i += 1
        can_repeat, last_repeat = True, ""  # a literal, ".", "^" or "$" (RE2 accepts "^*")
    if depth:
        raise _Bad(f"missing ): {p}")


def regex_problem(pattern: str) -> str | None:
    """The reason Istio (or pyproxy) would refuse ``pattern``, or None."""
    if not pattern:
        return "regex string match should not be empty"
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"regex is too large, max length allowed is {MAX_REGEX_LENGTH}"
    problem = re2_problem(pattern)
    if problem is not None:
        return f"{problem}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
    try:
        re.compile(pattern)
    except re.error as err:
        return f"valid RE2, but pyproxy's regex engine (Python re) cannot compile it: {err}"
    return None
