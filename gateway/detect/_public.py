"""Well-known public figures: their names in a prompt are not personal data about a data subject.

A name found by NER alone (no cue such as ``customer`` or ``my colleague``) is dropped when it is
one of these, so "Write a short biography of Lionel Messi" is not pseudonymized. A policy can add
more through an allow-list later; this is a floor, not a registry of famous people.
"""

from __future__ import annotations

import re

__all__ = ["is_public_figure", "public_figure_spans"]

_NAMES = """
ada lovelace; alan turing; albert einstein; marie curie; pierre curie; isaac newton;
charles darwin; nikola tesla; thomas edison; galileo galilei; stephen hawking; grace hopper;
katherine johnson; rosalind franklin; richard feynman; niels bohr; max planck; dmitri mendeleev;
louis pasteur; alexander fleming; gregor mendel; johannes kepler; nicolaus copernicus;
leonardo da vinci; michelangelo; vincent van gogh; pablo picasso; claude monet; rembrandt;
frida kahlo; salvador dali; william shakespeare; jane austen; charles dickens; mark twain;
leo tolstoy; fyodor dostoevsky; victor hugo; miguel de cervantes; dante alighieri;
johann wolfgang von goethe; ernest hemingway; virginia woolf; george orwell; j. k. rowling;
jk rowling; agatha christie; homer; plato; aristotle; socrates; confucius; immanuel kant;
karl marx; friedrich nietzsche; wolfgang amadeus mozart; ludwig van beethoven;
johann sebastian bach; frederic chopin; the beatles; john lennon; paul mccartney; elvis presley;
michael jackson; freddie mercury; bob dylan; taylor swift; beyonce; madonna; lady gaga;
george washington; abraham lincoln; thomas jefferson; franklin d. roosevelt; theodore roosevelt;
john f. kennedy; martin luther king; martin luther king jr.; barack obama; joe biden;
donald trump; bill clinton; george w. bush; ronald reagan; winston churchill; margaret thatcher;
queen elizabeth; queen elizabeth ii; king charles; napoleon; napoleon bonaparte; julius caesar;
cleopatra; alexander the great; charlemagne; angela merkel; emmanuel macron; nelson mandela;
mahatma gandhi; mother teresa; pope francis; dalai lama; vladimir putin; xi jinping;
justin trudeau; jacinda ardern; olaf scholz; marie antoinette; joan of arc; christopher columbus;
neil armstrong; buzz aldrin; yuri gagarin; amelia earhart; lionel messi; cristiano ronaldo;
pele; diego maradona; michael jordan; lebron james; serena williams; roger federer;
rafael nadal; novak djokovic; usain bolt; muhammad ali; tiger woods; simone biles;
michael phelps; steve jobs; bill gates; elon musk; mark zuckerberg; jeff bezos; warren buffett;
tim cook; satya nadella; sundar pichai; larry page; sergey brin; linus torvalds;
guido van rossum; tim berners-lee; dennis ritchie; ken thompson; oprah winfrey; walt disney;
charlie chaplin; marilyn monroe; audrey hepburn; tom hanks; meryl streep; leonardo dicaprio;
steven spielberg; alfred hitchcock; sigmund freud; carl jung; florence nightingale;
anne frank; helen keller; malala yousafzai; greta thunberg; sherlock holmes; harry potter
"""

PUBLIC_FIGURES: frozenset[str] = frozenset(
    " ".join(name.split()) for name in _NAMES.replace("\n", " ").split(";") if name.strip()
)


def is_public_figure(name: str) -> bool:
    """True when ``name`` (any case, any spacing) is a well-known public figure."""
    return " ".join(name.casefold().split()) in PUBLIC_FIGURES


_MENTION = re.compile(
    r"(?<!\w)(?:"
    + "|".join(
        r"\s+".join(re.escape(part) for part in name.split())
        for name in sorted(PUBLIC_FIGURES, key=len, reverse=True)
    )
    + r")(?!\w)",
    re.IGNORECASE,
)


def public_figure_spans(text: str) -> list[tuple[int, int]]:
    """Where public figures are named in ``text``."""
    return [m.span() for m in _MENTION.finditer(text)]
