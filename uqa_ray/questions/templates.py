"""Question templates (zh default, en option), prompt layout, and sub-task routing by substring.

The Chinese templates are worded around the official scorer's routing substrings (UQABENCH.md section
5), checked in the official order DF, MF, IP, AP, LI, SI, IT; a template of a later sub-task never
contains an earlier sub-task's substring. The English set mirrors this with our own markers
(`ROUTES["en"]`, same order). The generator re-routes every finished prompt (stem + options) and drops
the rare question whose option text accidentally contains an earlier marker, so routing is exact on
every generated question.
"""
from __future__ import annotations

from uqa_ray.questions.spec import LETTERS

# (sub-task, substrings) in the official routing order.
ROUTES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "zh": (
        ("DF", ("次浏览的商品的", "次（从1开始计数）浏览的")),
        ("MF", ("长度是多少？", "的商品有多少个")),
        ("IP", ("下一个可能点击的商品的标题是什么",)),
        ("AP", ("用户下一个可能点击的商品的",)),
        ("LI", ("用户最感兴趣的3个",)),
        ("SI", ("用户近期最感兴趣的",)),
        ("IT", ("偏好的转移路径是什么",)),
    ),
    "en": (
        ("DF", ("of the item clicked", "of the items clicked")),
        ("MF", ("How many of the user's clicks", "How long is the user's click sequence")),
        ("IP", ("title of the item the user will most likely click next",)),
        ("AP", ("of the item the user will most likely click next",)),
        ("LI", ("user's 3 favourite",)),
        ("SI", ("most interested in recently",)),
        ("IT", ("preference shifted over time",)),
    ),
}


def route(question: str, lang: str = "zh") -> str | None:
    """The sub-task of `question` by the first matching substring in routing order, else None."""
    for subtask, keys in ROUTES[lang]:
        if any(k in question for k in keys):
            return subtask
    return None


ATTR_WORD = {
    "zh": {"title": "标题", "cate": "品类", "brand": "品牌", "shop": "店铺"},
    "en": {"title": "title", "cate": "category", "brand": "brand", "shop": "shop"},
}
ATTR_PLURAL = {"zh": ATTR_WORD["zh"], "en": {"title": "titles", "cate": "categories", "brand": "brands", "shop": "shops"}}

# template id -> (sub-task, attributes it is asked for, zh text, en text). Placeholders: {attr}
# (attribute word), {attrs} (plural), {k}, {value}, {w} (SI window), {p} (IT phases).
TEMPLATES: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "DF.kth": ("DF", ("title", "cate", "brand", "shop"),
               "用户第{k}次（从1开始计数）浏览的商品的{attr}是什么？",
               "What is the {attr} of the item clicked at position {k} of the user's history "
               "(counting from 1, oldest first)?"),
    "DF.kth_last": ("DF", ("title", "cate", "brand", "shop"),
                    "用户倒数第{k}次浏览的商品的{attr}是什么？",
                    "What is the {attr} of the item clicked {k} click(s) before the end of the user's "
                    "history (1 = the last click)?"),
    "DF.last_k": ("DF", ("title", "cate", "brand", "shop"),
                  "用户最后{k}次浏览的商品的{attr}按时间先后依次是什么？",
                  "What are the {attrs} of the items clicked last by the user ({k} clicks, oldest first)?"),
    "MF.count": ("MF", ("title", "cate", "brand", "shop"),
                 "用户浏览过的{attr}为「{value}」的商品有多少个（按浏览次数计）？",
                 "How many of the user's clicks are on items whose {attr} is \"{value}\"?"),
    "MF.length": ("MF", ("length",),
                  "用户浏览序列的长度是多少？",
                  "How long is the user's click sequence?"),
    "IP.next": ("IP", ("title",),
                "用户下一个可能点击的商品的标题是什么？",
                "What is the title of the item the user will most likely click next?"),
    "IP.history": ("IP", ("title",),
                   "根据用户的浏览历史，用户下一个可能点击的商品的标题是什么？",
                   "Based on the user's history, what is the title of the item the user will most "
                   "likely click next?"),
    "AP.next": ("AP", ("cate", "brand", "shop"),
                "用户下一个可能点击的商品的{attr}是什么？",
                "What is the {attr} of the item the user will most likely click next?"),
    "AP.history": ("AP", ("cate", "brand", "shop"),
                   "根据用户的浏览历史，推测用户下一个可能点击的商品的{attr}是什么？",
                   "Based on the user's history, what is the {attr} of the item the user will most "
                   "likely click next?"),
    "LI.top3": ("LI", ("cate", "brand", "shop"),
                "用户最感兴趣的3个{attr}是什么？请按兴趣从高到低排列。",
                "What are the user's 3 favourite {attrs}, most interesting first?"),
    "LI.buy": ("LI", ("cate", "brand", "shop"),
               "用户想购买某个{attr}的商品。根据用户的历史信息，用户最感兴趣的3个{attr}依次是什么（按兴趣从高到低）？",
               "The user wants to buy from some {attr}. Based on the user's history, what are the "
               "user's 3 favourite {attrs} (most interesting first)?"),
    "SI.recent": ("SI", ("cate", "brand", "shop"),
                  "用户近期最感兴趣的{attr}是什么？",
                  "Which {attr} is the user most interested in recently?"),
    "SI.window": ("SI", ("cate", "brand", "shop"),
                  "根据最近{w}次浏览，用户近期最感兴趣的{attr}是什么？",
                  "Judging by the last {w} clicks, which {attr} is the user most interested in recently?"),
    "IT.path": ("IT", ("cate", "brand", "shop"),
                "将用户的浏览历史按时间平均分为{p}段，用户对{attr}偏好的转移路径是什么？",
                "Splitting the history into {p} equal periods, how has the user's {attr} preference "
                "shifted over time?"),
    "IT.changed": ("IT", ("cate", "brand", "shop"),
                   "用户的兴趣最近是否发生了变化？按时间平均分为{p}段看，用户对{attr}偏好的转移路径是什么？",
                   "Has the user's interest changed? Over {p} equal periods, how has the user's {attr} "
                   "preference shifted over time?"),
}
TEMPLATES_OF = {s: tuple(t for t, v in TEMPLATES.items() if v[0] == s) for s in ("DF", "MF", "IP", "AP", "LI", "SI", "IT")}

# How multi-valued answers are written: a chronological path, or a ranked list (most interesting first).
PATH_SEP = " → "
RANK_SEP = {"zh": "、", "en": ", "}

PROMPT_TAIL = {
    "zh": ("选项：", "请只回答选项字母。", "候选答案：", "请只回答正确的候选答案。"),
    "en": ("Options:", "Answer with the option letter only.", "Candidates:", "Answer with the correct candidate only."),
}


def stem(template: str, lang: str, attr: str, **kw) -> str:
    sub, attrs, zh, en = TEMPLATES[template]
    if attr not in attrs:
        raise ValueError(f"template {template} does not ask for attribute {attr!r}")
    text = zh if lang == "zh" else en
    word = ATTR_WORD[lang].get(attr, "")
    return text.format(attr=word, attrs=ATTR_PLURAL[lang].get(attr, word), **kw)


def letter_prompt(stem_text: str, options: list[str], lang: str) -> str:
    """The official layout: options labelled by single-token letters; the gold answer is the letter."""
    head, tail = PROMPT_TAIL[lang][0], PROMPT_TAIL[lang][1]
    lines = [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join([stem_text, head, *lines, tail])


def content_prompt(stem_text: str, options: list[str], lang: str) -> str:
    """Unlabelled candidates; the gold answer is the option's own text (for small LMs, option scoring)."""
    head, tail = PROMPT_TAIL[lang][2], PROMPT_TAIL[lang][3]
    return "\n".join([stem_text, head, *options, tail])
