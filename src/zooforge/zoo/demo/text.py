"""Procedural text classification tasks for the offline text demo (``demo:topics``, ``demo:intent``).

Sentences are drawn from templates, a per-class vocabulary and shared filler words, seeded per
sample like the image tasks. ``topics`` asks what a sentence is about; in ``intent`` every class
shares the same nouns and only the verb phrase tells a question from a request from a complaint, so a
bag of topic words does not solve it. A fifth of the sentences carry a distractor word from another
class. Two harder ones, where a bag of words is not enough: in ``negation`` a sentence's sentiment
flips when it is negated ("the soup was not bad"), and in ``relation`` the class is the animal that
acts, written in active or passive voice ("the cat was chased by the fox" is the fox's), with both
animals drawn from the same set.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TEXT_TASKS", "generate_text"]

_FILLER = ["today", "again", "really", "this week", "at last", "honestly", "for once", "as usual"]

_TOPICS = {
    "sport": ["match", "goal", "striker", "league", "coach", "tennis", "marathon", "referee", "stadium", "season"],
    "food": ["recipe", "soup", "bakery", "spices", "dinner", "chef", "noodles", "dessert", "oven", "harvest"],
    "weather": ["rain", "storm", "forecast", "snow", "sunshine", "humidity", "thunder", "wind", "fog", "heatwave"],
    "music": ["concert", "guitar", "album", "chorus", "drummer", "melody", "orchestra", "lyrics", "tour", "vinyl"],
    "computing": ["laptop", "compiler", "server", "keyboard", "database", "network", "software", "processor",
                  "browser", "update"],
}
_TOPIC_TEMPLATES = ["the {a} was the talk of the town {f}", "everyone kept discussing the {a} and the {b}",
                    "i read a long article about the {a} {f}", "my neighbour cannot stop mentioning the {a}",
                    "there is news about the {a} and some {b}", "we spent the evening on the {a} {f}"]

_INTENT_NOUNS = ["order", "ticket", "account", "parcel", "booking", "invoice", "subscription", "refund"]
_INTENTS = {
    "question": ["where is my {n}", "when will the {n} arrive", "could you tell me about the {n}",
                 "what happened to the {n}", "is the {n} ready yet", "how do i check the {n}"],
    "request": ["please cancel the {n}", "i would like to change the {n}", "kindly resend the {n}",
                "can you update the {n} for me", "send me a copy of the {n}", "please move the {n} to friday"],
    "complaint": ["the {n} is wrong and i am upset", "i am disappointed with the {n}", "the {n} never showed up",
                  "this {n} has been a disaster", "nobody fixed the {n} after weeks", "the {n} was charged twice"],
    "thanks": ["thank you for sorting the {n}", "the {n} arrived and it is perfect", "great job with the {n}",
               "i appreciate the help with the {n}", "many thanks for the quick {n}", "the {n} went smoothly"],
}


def _topic(rng: np.random.Generator, cls: str) -> str:
    words = _TOPICS[cls]
    a, b = rng.choice(words, 2, replace=False)
    if rng.uniform() < 0.2:                                   # a distractor from another topic
        b = rng.choice(_TOPICS[rng.choice([c for c in _TOPICS if c != cls])])
    return rng.choice(_TOPIC_TEMPLATES).format(a=a, b=b, f=rng.choice(_FILLER))


def _intent(rng: np.random.Generator, cls: str) -> str:
    text = rng.choice(_INTENTS[cls]).format(n=rng.choice(_INTENT_NOUNS))
    if rng.uniform() < 0.2:                                   # a distractor phrase from another intent
        other = rng.choice([c for c in _INTENTS if c != cls])
        text += " " + rng.choice(["and also", "by the way", "or"]) + " " + \
            rng.choice(_INTENTS[other]).format(n=rng.choice(_INTENT_NOUNS)).split(" the ")[0]
    return f"{text} {rng.choice(_FILLER)}"


_THINGS = ["soup", "film", "hotel", "concert", "phone", "lecture", "train ride", "haircut", "game", "book"]
_SENTIMENT = {"positive": ["good", "great", "lovely", "excellent", "pleasant", "fun"],
              "negative": ["bad", "awful", "boring", "terrible", "dull", "rude"]}
_NEGATION_TEMPLATES = ["the {t} was {neg}{a}", "honestly the {t} was {neg}{a} {f}", "i thought the {t} was {neg}{a}",
                       "my friends said the {t} was {neg}{a}", "the {t} {f} was {neg}{a}"]


def _negation(rng: np.random.Generator, cls: str) -> str:
    negated = rng.uniform() < 0.5                             # half the sentences say the opposite word, negated
    other = "negative" if cls == "positive" else "positive"
    adjective = rng.choice(_SENTIMENT[other if negated else cls])
    neg = rng.choice(["not ", "never ", "not at all "]) if negated else rng.choice(["", "really ", "quite "])
    return rng.choice(_NEGATION_TEMPLATES).format(t=rng.choice(_THINGS), a=adjective, neg=neg, f=rng.choice(_FILLER))


_ANIMALS = ["dog", "cat", "fox", "horse"]
_ACTIONS = [("chased", "chased"), ("bit", "bitten"), ("followed", "followed"), ("pushed", "pushed"), ("saw", "seen")]


def _relation(rng: np.random.Generator, cls: str) -> str:
    victim = rng.choice([a for a in _ANIMALS if a != cls])
    active, passive = _ACTIONS[rng.integers(len(_ACTIONS))]
    if rng.uniform() < 0.5:
        text = f"the {cls} {active} the {victim}"
    else:
        text = f"the {victim} was {passive} by the {cls}"
    return f"{text} {rng.choice(_FILLER)}"


TEXT_TASKS = {
    "topics": (tuple(_TOPICS), _topic),
    "intent": (tuple(_INTENTS), _intent),
    "negation": (tuple(_SENTIMENT), _negation),
    "relation": (tuple(_ANIMALS), _relation),
}


def generate_text(task: str, n_per_class: int, seed: int = 0) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """(sentences, labels int64, class names), interleaved by class; sample i of class c has its own
    generator seeded by (seed, task, c, i), so a larger ``n_per_class`` extends a smaller one."""
    classes, draw = TEXT_TASKS[task]
    task_key = sum(ord(ch) * (i + 1) for i, ch in enumerate(task))
    texts, labels = [], []
    for i in range(n_per_class):
        for c, name in enumerate(classes):
            texts.append(draw(np.random.default_rng([seed, task_key, c, i, 7]), name))
            labels.append(c)
    return texts, np.asarray(labels, dtype=np.int64), classes
