"""Language tags for manifests: HLS LANGUAGE (RFC 8216 §4.3.4.1) and DASH @lang
are BCP 47 (RFC 5646), whose primary subtag is the shortest ISO 639 code (§2.2.1):
"en", not "eng". Renditions store the ISO 639-2/T code their mdhd carries."""

from __future__ import annotations

__all__ = ["bcp47"]

# ISO 639-2 (T and B forms) -> ISO 639-1, for the languages that have one.
_TWO_LETTER = {
    "ara": "ar", "bul": "bg", "cat": "ca", "ces": "cs", "cze": "cs", "cym": "cy", "wel": "cy",
    "dan": "da", "deu": "de", "ger": "de", "ell": "el", "gre": "el", "eng": "en", "est": "et",
    "eus": "eu", "baq": "eu", "fas": "fa", "per": "fa", "fin": "fi", "fra": "fr", "fre": "fr",
    "gle": "ga", "glg": "gl", "heb": "he", "hin": "hi", "hrv": "hr", "hun": "hu", "hye": "hy",
    "arm": "hy", "ind": "id", "isl": "is", "ice": "is", "ita": "it", "jpn": "ja", "kat": "ka",
    "geo": "ka", "kor": "ko", "lav": "lv", "lit": "lt", "mkd": "mk", "mac": "mk", "msa": "ms",
    "may": "ms", "nld": "nl", "dut": "nl", "nor": "no", "nob": "nb", "pol": "pl", "por": "pt",
    "ron": "ro", "rum": "ro", "rus": "ru", "slk": "sk", "slo": "sk", "slv": "sl", "spa": "es",
    "sqi": "sq", "alb": "sq", "srp": "sr", "swe": "sv", "tam": "ta", "tha": "th", "tur": "tr",
    "ukr": "uk", "urd": "ur", "vie": "vi", "zho": "zh", "chi": "zh",
}


def bcp47(code: str) -> str | None:
    """"fra" / "fre" / "fr" -> "fr"; other ISO 639 codes as they are; None for
    "und", "" and anything that is not a language code (no LANGUAGE then)."""
    primary = code.strip().lower().split("-")[0]
    if primary in ("", "und") or not primary.isalpha() or not primary.isascii():
        return None
    if len(primary) == 3:
        return _TWO_LETTER.get(primary, primary)
    return primary if len(primary) == 2 else None
