"""One switch for everything a learner reads from code: checker feedback, widget labels, plot titles and axis
labels, the dashboards' text. Introduced in notebook 01 (``moe_lab.setup(lang="zh")``).

Python's standard ``gettext``: messages are written in English in the code, wrapped in ``_()`` (``N_()`` marks a
message kept in a table and translated where it is shown); the Chinese catalog is
``moe_lab/locale/zh/LC_MESSAGES/moe_lab.po``, compiled to the ``.mo`` next to it by ``python tools/i18n.py
compile`` (``tools/i18n.py update`` extracts new messages). A message without a translation falls back to
English; ``tests/test_i18n.py`` reports every such message.

The language: ``setup(lang=...)``, else the environment variable ``MOE_LAB_LANG`` (the Chinese notebooks' kernel
"MoE Lab (MindSpore, 中文)" sets it), else English.
"""

from __future__ import annotations

import gettext
import os
from pathlib import Path

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "moe_lab"
LANG_ENV = "MOE_LAB_LANG"
LANGUAGES = {"en": "English", "zh": "中文 (简体)"}
_ALIASES = {"zh_cn": "zh", "zh-cn": "zh", "zh_hans": "zh", "zh-hans": "zh", "cn": "zh", "en_us": "en", "en-us": "en"}

_translation: gettext.NullTranslations = gettext.NullTranslations()
_language = "en"


def normalise(lang: str | None) -> str:
    """``"zh-CN"``, ``"zh_CN"``, ``"ZH"`` -> ``"zh"``; a clear error listing the available languages otherwise."""
    if lang is None:
        lang = os.environ.get(LANG_ENV) or "en"
    if not isinstance(lang, str):
        raise TypeError(f"lang must be a string such as 'zh' or 'en', got {type(lang).__name__}")
    key = lang.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in LANGUAGES:
        available = ", ".join(f"'{code}' ({name})" for code, name in LANGUAGES.items())
        raise ValueError(f"lang must be one of {available}; got {lang!r}")
    return key


def set_language(lang: str | None = None) -> str:
    """Switch every message of the package to ``lang`` (default: ``MOE_LAB_LANG``, else English)."""
    global _translation, _language
    _language = normalise(lang)
    _translation = (gettext.NullTranslations() if _language == "en" else
                    gettext.translation(DOMAIN, LOCALE_DIR, languages=[_language], fallback=True))
    return _language


def language() -> str:
    """The current language code (``"en"`` or ``"zh"``)."""
    return _language


def _(message: str) -> str:
    """``message`` in the current language (English if it has no translation)."""
    return _translation.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form for ``n``, in the current language."""
    return _translation.ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark ``message`` for translation without translating it now (module-level tables); ``_()`` it when shown."""
    return message


set_language()
