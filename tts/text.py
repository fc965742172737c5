"""Text handling before synthesis: validate, detect the language, split into sentences, normalise.

Number reading uses maintained libraries: ``cn2an`` (Chinese numerals, dates, percentages, decimals) and
``num2words`` (English). What neither knows is *which* reading a service answer needs: a hotline
"12345" or "010-12345678" must be read digit by digit (and "1" as 幺 in Chinese), "9:30" is a clock
time, "3-5个工作日" is a range, not a subtraction. Those context rules are hand-written below and run
before the library conversion.
"""

from __future__ import annotations

import re
import unicodedata

from common.errors import UserFacingError

DEFAULT_MAX_CHARS = 1000

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")

# ---------------------------------------------------------------------------------------------------
# validation and language
# ---------------------------------------------------------------------------------------------------


def check_text(text: str | None, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Return ``text`` stripped, or raise a clear :class:`UserFacingError` when empty or too long."""
    if text is None or not str(text).strip():
        raise UserFacingError("Nothing to say: the text for speech is empty.")
    text = str(text).strip()
    if len(text) > max_chars:
        raise UserFacingError(
            f"The text is too long to read aloud ({len(text)} characters; the limit is {max_chars}). "
            f"Shorten the answer or raise the limit (DH_TTS_MAX_CHARS)."
        )
    if not (_HAN.search(text) or re.search(r"[A-Za-z0-9]", text)):
        raise UserFacingError("The text has nothing to read aloud (no Chinese or English words or numbers).")
    return text


def detect_language(text: str) -> str:
    """'zh' when Chinese characters are at least as many as Latin words, else 'en'."""
    han = len(_HAN.findall(text))
    words = len(_LATIN_WORD.findall(text))
    if han == 0 and words == 0:
        return "zh" if re.search(r"[，。！？、]", text) else "en"
    return "zh" if han >= words else "en"


# ---------------------------------------------------------------------------------------------------
# sentence splitting
# ---------------------------------------------------------------------------------------------------

# A sentence ends after 。！？；!?; or …, or after '.' that is not inside a number ("3.5") or an
# abbreviation-like token directly followed by a letter; closing quotes/brackets stay with their sentence.
_SENT_END = re.compile(r"""(?:[。！？!?；;…]+|(?<!\d)\.(?!\d)|(?<=\d)\.(?!\d))[”’"'）)\]」』]*\s*|\n+""")
_CLAUSE_END = re.compile(r"[，,、：:—]+\s*")


def _hard_chunks(piece: str, limit: int) -> list[str]:
    """Split ``piece`` into chunks of at most ``limit`` characters, at spaces when there are some."""
    out: list[str] = []
    while len(piece) > limit:
        cut = piece.rfind(" ", 0, limit)
        cut = cut if cut > limit // 2 else limit
        out.append(piece[:cut].strip())
        piece = piece[cut:].strip()
    if piece:
        out.append(piece)
    return out


def split_sentences(text: str, lang: str = "zh", max_len: int | None = None) -> list[str]:
    """Sentences of at most ``max_len`` characters (60 for zh, 200 for en), punctuation kept.

    Over-long sentences are cut at clause punctuation (，、：), then at spaces, then hard.
    """
    limit = max_len or (60 if lang == "zh" else 200)
    sentences: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        if m.end() > start:
            sentences.append(text[start:m.end()])
            start = m.end()
    sentences.append(text[start:])
    out: list[str] = []
    for s in (x.strip() for x in sentences):
        if not s:
            continue
        if not (_HAN.search(s) or re.search(r"[A-Za-z0-9]", s)):  # lone punctuation: glue to previous
            if out:
                out[-1] += s
            continue
        if len(s) <= limit:
            out.append(s)
            continue
        buf = ""
        for clause in re.split(r"(?<=[，,、：:—])\s*", s):
            if len(buf) + len(clause) <= limit:
                buf += clause
                continue
            if buf:
                out.append(buf.strip())
            if len(clause) > limit:
                *full, buf = _hard_chunks(clause, limit)
                out.extend(full)
            else:
                buf = clause
        if buf.strip():
            out.append(buf.strip())
    return out


# ---------------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------------

_ZH_DIGITS_PHONE = dict(zip("0123456789", "零幺二三四五六七八九", strict=True))
_EN_DIGITS = dict(zip("0123456789", ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                     "nine"], strict=True))
_ZH_PHONE_CONTEXT = re.compile(r"(电话|热线|拨打|致电|号码|手机|编号|工号|邮编|短信|客服|传真|服务号|卡号|验证码)[^，。！？\d]{0,4}$")
_EN_PHONE_CONTEXT = re.compile(r"(hotline|phone|call|dial|number|no\.|tel\.?|fax|code|sms|text)\W{0,3}(?:\w+\W+){0,2}$", re.I)
# characters after a digit run that make it a quantity, not a code
_ZH_UNITS = "元块角分万亿千百个人次天年月日号时点岁件张份%％倍米斤克吨平方公里小时分钟秒周期栋层楼室户项条"
_DIGIT_RUN = re.compile(r"(?<![\d.,])\+?\d[\d\- ]*\d(?![\d.,]\d)|(?<![\d.,])\d(?![\d.,]\d)")


def _to_halfwidth(text: str) -> str:
    """Full-width digits/letters/%/. to ASCII (keeps Chinese punctuation as it is)."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xFF10 <= code <= 0xFF19 or 0xFF21 <= code <= 0xFF3A or 0xFF41 <= code <= 0xFF5A or ch in "％．＋－":
            out.append(unicodedata.normalize("NFKC", ch))
        else:
            out.append(ch)
    return "".join(out)


def _is_code(run: str, before: str, after: str, lang: str) -> bool:
    """Should this digit run be read digit by digit (hotline, phone number, ID) rather than as a quantity?"""
    digits = re.sub(r"\D", "", run)
    if len(digits) < 3 and "-" not in run.strip("-"):
        return False
    if lang == "zh":
        if after[:1] and after[:1] in _ZH_UNITS and not _ZH_PHONE_CONTEXT.search(before):
            return False
        context = bool(_ZH_PHONE_CONTEXT.search(before)) or after.startswith(("热线", "服务热线", "号码"))
    else:
        if re.match(r"\s*(%|percent|yuan|dollars?|usd|rmb|people|persons|days|years|km|kg|m\b)", after, re.I):
            return False
        context = bool(_EN_PHONE_CONTEXT.search(before)) or bool(re.match(r"\s*hotline", after, re.I))
    if "-" in run.strip("-") and len(digits) >= 7:  # 010-12345678, 400-123-4567
        return True
    if digits.startswith("0") and len(digits) >= 3:
        return True
    return context or len(digits) >= 7


def _spell(run: str, lang: str) -> str:
    digits = re.sub(r"\D", "", run)
    if lang == "zh":
        return "".join(_ZH_DIGITS_PHONE[d] for d in digits)
    return " ".join(_EN_DIGITS[d] for d in digits)


def _codes_digit_by_digit(text: str, lang: str) -> str:
    def repl(m: re.Match) -> str:
        run = m.group(0)
        if _is_code(run, text[max(0, m.start() - 12):m.start()], text[m.end():m.end() + 6], lang):
            return (" " if lang == "en" else "") + _spell(run, lang) + (" " if lang == "en" else "")
        return run

    return _DIGIT_RUN.sub(repl, text)


def _zh_number(n: str) -> str:
    import cn2an

    return cn2an.an2cn(n, "low")


def normalize_zh(text: str) -> str:
    import cn2an

    text = _to_halfwidth(text)
    # ISO dates first, so 2024-03-05 is not taken for a phone number: -> 2024年3月5日 (cn2an reads the year)
    text = re.sub(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)", r"\1年\2月\3日", text)
    text = _codes_digit_by_digit(text, "zh")
    # clock times: 9:30 -> 九点三十分, 14:00 -> 十四点
    text = re.sub(r"(?<!\d)([01]?\d|2[0-3])[:：]([0-5]\d)(?!\d)",
                  lambda m: _zh_number(str(int(m.group(1)))) + "点"
                  + ("" if m.group(2) == "00" else _zh_number(str(int(m.group(2)))) + "分"), text)
    # ranges: 3-5个工作日 / 3~5天 -> 三至五
    text = re.sub(r"(\d+(?:\.\d+)?)\s*[-~～—]\s*(\d+(?:\.\d+)?)", r"\1至\2", text)
    text = text.replace("‰", "千分号")  # cn2an knows %, not ‰
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 12,345 -> 12345
    try:
        text = cn2an.transform(text, "an2cn")
    except Exception:  # cn2an rejects a few odd shapes; read any digits left one by one
        pass
    text = re.sub(r"\d", lambda m: "零一二三四五六七八九"[int(m.group(0))], text)
    for a, b in (("&", "和"), ("+", "加"), ("=", "等于"), ("@", " at "), ("℃", "摄氏度"), ("°C", "摄氏度")):
        text = text.replace(a, b)
    return _punctuation(text, "zh")


def num2words(value, **kwargs) -> str:
    """``num2words`` without its inner commas ("one thousand, two hundred") that would make a pause."""
    from num2words import num2words as _n2w

    return _n2w(value, **kwargs).replace(",", "")


def _en_money(m: re.Match) -> str:
    symbol, amount = m.group(1), m.group(2).replace(",", "")
    unit = {"$": "dollar", "¥": "yuan", "￥": "yuan", "€": "euro", "£": "pound"}[symbol]
    whole, _, frac = amount.partition(".")
    words = num2words(int(whole)) + " " + unit + ("" if int(whole) == 1 else "s")
    if unit == "yuan":
        words = words.removesuffix("s")
    if frac and int(frac):
        cents = int((frac + "0")[:2])
        words += f" and {num2words(cents)} cent" + ("" if cents == 1 else "s") if unit in ("dollar", "euro") \
            else f" point {' '.join(_EN_DIGITS[d] for d in frac)}"
    return " " + words + " "


def normalize_en(text: str) -> str:
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"]
    text = _to_halfwidth(text)

    def iso_date(m: re.Match) -> str:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if not (1 <= mo <= 12 and 1 <= d <= 31):
            return m.group(0)
        return f"{months[mo - 1]} {num2words(d, to='ordinal')}, {num2words(y, to='year')}"

    text = re.sub(r"(?<!\d)(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?!\d)", iso_date, text)
    text = _codes_digit_by_digit(text, "en")  # after dates, so 2024-03-05 is not taken for a phone number
    text = re.sub(r"(?<!\d)([01]?\d|2[0-3]):([0-5]\d)(?!\d)",
                  lambda m: num2words(int(m.group(1))) + (" o'clock" if m.group(2) == "00" else
                                                          (" oh " if m.group(2)[0] == "0" else " ")
                                                          + ("" if m.group(2) == "00" else num2words(int(m.group(2))))),
                  text)
    text = re.sub(r"([$¥￥€£])\s?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)", _en_money, text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?%", lambda m: f"{m.group(1)} percent", text)
    text = re.sub(r"(?<=\d)\s*[-~]\s*(?=\d)", " to ", text)
    text = re.sub(r"(?<!\d)(\d+)(st|nd|rd|th)\b", lambda m: num2words(int(m.group(1)), to="ordinal"), text)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    # a bare 4-digit number between 1100 and 2099 is most often a year in service answers
    text = re.sub(r"(?<![\d.])(1[1-9]\d\d|20\d\d)(?![\d.]|\s*(?:yuan|dollars|people|km|kg|m)\b)",
                  lambda m: num2words(int(m.group(1)), to="year"), text)
    text = re.sub(r"(?<![\d.])\d+\.\d+(?![\d.])", lambda m: num2words(float(m.group(0))), text)
    text = re.sub(r"\d+", lambda m: num2words(int(m.group(0))), text)
    for a, b in (("&", " and "), ("+", " plus "), ("=", " equals "), ("@", " at "), ("°C", " degrees Celsius")):
        text = text.replace(a, b)
    return _punctuation(text, "en")


_ZH_PUNCT = {",": "，", ";": "；", ":": "：", "!": "！", "?": "？", "(": "（", ")": "）"}
_EN_PUNCT = {"，": ", ", "。": ". ", "！": "! ", "？": "? ", "；": "; ", "：": ": ", "、": ", ", "（": " (", "）": ") ",
             "“": '"', "”": '"', "‘": "'", "’": "'"}


def _punctuation(text: str, lang: str) -> str:
    """Unify punctuation for the language, drop markup symbols engines would spell out, squeeze spaces."""
    text = re.sub(r"[*#_`|<>\[\]{}【】《》〈〉「」『』~^\\]+", " ", text)  # markdown / brackets: not spoken
    if lang == "zh":
        text = re.sub(r"(?<=[\u4e00-\u9fff])[,;:!?()](?=\s|[\u4e00-\u9fff]|$)", lambda m: _ZH_PUNCT[m.group(0)], text)
        text = re.sub(r"(?<=[\u4e00-\u9fff])\.(?=\s|[\u4e00-\u9fff]|$)", "。", text)
        text = re.sub(r"\s+(?=[\u4e00-\u9fff，。！？；：])|(?<=[\u4e00-\u9fff，。！？；：])\s+", "", text)
    else:
        for a, b in _EN_PUNCT.items():
            text = text.replace(a, b)
        text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def normalize(text: str, lang: str) -> str:
    """Numbers, dates, times, symbols and punctuation spelled out for ``lang`` ('zh' or 'en')."""
    return normalize_zh(text) if lang == "zh" else normalize_en(text)
