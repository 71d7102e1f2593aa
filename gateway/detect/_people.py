"""Names and street addresses beyond what the NER model finds.

Names: a cue (``Account holder:``, ``customer``, ``This concerns``, ``Cliente:``, ``my name is``)
followed by two to four name words, Capitalized, UPPERCASE or, after a strong cue and ending at
punctuation, lowercase; ``first name is X`` / ``surname is Y`` give single words. Addresses: street
patterns in English (number + name + street suffix), German (``…straße 8``), French
(``58, rue Dubois``), Italian, Spanish/Portuguese and Dutch, plus a cue (``lives at``,
``address:``, ``indirizzo:``, ``Anschrift:``) followed by text with a house number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.detect._base import Candidate

__all__ = ["find_addresses", "find_names"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_R_NAME = "bastion-names"
_R_ADDR = "bastion-addresses"

_NAME_CUE = re.compile(
    r"""(?<![\w-])(?:account\ holder|card\ ?holder|holder|customer|client|cliente|kundin|kunde|klant
      |patient|patiente|paciente|paziente|colleague|co-?worker|partner's\ name|partner
      |the\ caller\ was|caller|this\ concerns|concerns|regarding|my\ name\ is|his\ name\ is
      |her\ name\ is|name\ is|named|contact\ person|sender|recipient|employee|assistant\ to
      |also\ features|features|signed\ by|mr\.?|mrs\.?|ms\.?|dr\.?|herr|frau|monsieur|madame
      |mme\.?|signora|signor|señora|señor|senhora|senhor|sr\.|sra\.)
      (?=[\s:,])""",
    re.IGNORECASE | re.VERBOSE,
)
# Cues after which a lowercase name is taken (weaker cues need a Capitalized name).
_STRONG_CUES = frozenset(
    [
        "account holder",
        "holder",
        "card holder",
        "cardholder",
        "this concerns",
        "concerns",
        "the caller was",
        "caller",
        "my name is",
        "his name is",
        "her name is",
        "name is",
        "cliente",
        "kunde",
        "kundin",
        "klant",
    ]
)
_PART_CUE = re.compile(
    r"""(?=[fFgGsSlLnNcCvVpPaA])(?:first\ name|given\ name|forename|surname|last\ name|family\ name|nome|cognome
      |vorname|nachname|prénom|prenom|nom\ de\ famille|apellido|sobrenome|voornaam|achternaam)
      \s*(?:is|:|=|est|ist|è|es|é)?\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_WORD = re.compile(r"[^\W\d_](?:[\w'’-]*[^\W\d_])?\.?")
_FILLER = _words(
    "the my our a an his her their your customer patient client colleague cliente kunde mr "
    "mr. mrs mrs. ms ms. dr dr. named called was is"
)
_PARTICLES = _words(
    "van von der den de da di del della dos das du le la mac mc o ó ní ni bin ibn al el ter ten y e"
)
_STOP = _words(
    "a about above after again all also am an and any are as ask asked at be because been "
    "before being below between both but by can could did do does doing done down during "
    "each else ever every few for from further get gets got had has have having he her here "
    "hers him his how i if in into is it its itself just know let like made make many may "
    "me might more most much must my never new no nor not now of off ok okay on once only "
    "or other our out over own please same say said says see she should so some still such "
    "than thank thanks that the their them then there these they this those through to too "
    "under until up upon us very want wants was we well were what when where which while "
    "who whom why will with would yes yet you your account accounts card number numbers "
    "record records ticket tickets update updates details detail form support team service "
    "services department office company request requests reply note notes today tomorrow "
    "yesterday name names phone email address call called calling regarding asked asking "
    "said wrote called told sent"
)
_CAP_STOP = _words(
    "The This That These Those Also Note For Please Thanks Thank I We Our Your You He She "
    "It They Hi Hello Dear Regards Best Here There What When Where Why How Is Are Was Were "
    "Can Could Would Should Will May Might Must Do Does Did Let Good Great Ok OK Yes No Not "
    "And But Or If Then Account Customer Patient Client Support Team Record Ticket Update "
    "Details Summary Monday Tuesday Wednesday Thursday Friday Saturday Sunday January "
    "February March April June July August September October November December Mr Mrs Ms Dr"
)
_TERMINATOR = frozenset(".,;:!?)\n\"'")

# Street suffixes used by US/UK address formats (USPS list, as produced by common generators).
_US_SUFFIXES = (
    "Alley|Avenue|Ave|Branch|Bridge|Brook|Brooks|Burg|Burgs|Bypass|Camp|Canyon|Cape|Causeway"
    "|Center|Centers|Circle|Circles|Cliff|Cliffs|Club|Common|Commons|Corner|Corners|Course"
    "|Court|Courts|Cove|Coves|Creek|Crescent|Crest|Crossing|Crossroad|Curve|Dale|Dam|Divide"
    "|Drive|Drives|Dr|Estate|Estates|Expressway|Extension|Extensions|Fall|Falls|Ferry|Field"
    "|Fields|Flat|Flats|Ford|Fords|Forest|Forge|Forges|Fork|Forks|Fort|Freeway|Garden|Gardens"
    "|Gateway|Glen|Glens|Green|Greens|Grove|Groves|Harbor|Harbors|Harbour|Haven|Heights"
    "|Highway|Hill|Hills|Hollow|Inlet|Island|Islands|Isle|Junction|Junctions|Key|Keys|Knoll"
    "|Knolls|Lake|Lakes|Land|Landing|Lane|Ln|Light|Lights|Loaf|Lock|Locks|Lodge|Loop|Mall"
    "|Manor|Manors|Meadow|Meadows|Mews|Mill|Mills|Mission|Motorway|Mount|Mountain|Mountains"
    "|Neck|Orchard|Oval|Overpass|Park|Parks|Parkway|Parkways|Pass|Passage|Path|Pike|Pine"
    "|Pines|Place|Plain|Plains|Plaza|Point|Points|Port|Ports|Prairie|Radial|Ramp|Ranch|Rapid"
    "|Rapids|Rest|Ridge|Ridges|River|Road|Rd|Roads|Route|Row|Rue|Run|Shoal|Shoals|Shore"
    "|Shores|Skyway|Spring|Springs|Spur|Spurs|Square|Squares|Station|Stravenue|Stream|Street"
    "|St|Streets|Summit|Terrace|Throughway|Trace|Track|Trafficway|Trail|Tunnel|Turnpike"
    "|Underpass|Union|Unions|Valley|Valleys|Via|Viaduct|View|Views|Village|Villages|Ville"
    "|Vista|Walk|Walks|Wall|Way|Ways|Well|Wells|Boulevard|Blvd|Close|Gate|Wharf|Yard|Rise"
    "|Vale|Wynd|Approach|Parade|Grange|Chase|Dell|Esplanade|Quay|Wood|Bank|Fold|Side|Mead"
)
_CAP = r"[A-ZÀ-ÖØ-Þ][\w'’.-]*"
_ADDRESS_PATTERNS = (
    # 8973 Holly Locks Apt. 174, Reedbury, MI 65418 / Flat 68d Watts Isle / 06 Gavin Plains
    re.compile(
        rf"(?:\b(?:Flat|Studio|Apartment|Unit)\s+\w{{1,5}}\s+|(?<![\w.,-])\d{{1,6}}[A-Za-z]?\s+)"
        rf"(?:[NSEW]\.?\s+)?(?:{_CAP}\s+){{1,3}}(?:{_US_SUFFIXES})\b\.?"
        rf"(?:\s+(?:Apt\.?|Suite|Unit|#)\s*\w{{1,6}})?"
        rf"(?:,\s*{_CAP}(?:\s+{_CAP}){{0,2}},\s*[A-Z]{{2}}\s+\d{{5}})?"
    ),
    # Gutknechtstraße 8 / Betti-Kohl-Allee 8, 85314 Dessau / Benderstraße 91-83
    re.compile(
        r"\b[A-ZÄÖÜ][\wäöüß.-]*(?i:straße|strasse|str\.|weg|allee|platz|gasse|ring|damm|ufer"
        r"|chaussee|pfad|steig|markt)\s+\d{1,5}[a-z]?(?:\s*[-/]\s*\d{1,5}[a-z]?)?"
        r"(?:,\s*\d{5}\s+[A-ZÄÖÜ][\w-]*(?:\s+[A-ZÄÖÜ][\w-]*)?)?"
    ),
    # 58, rue Dubois, 07102 Maillard / rue de Maillot, 20665 Peron
    re.compile(
        r"(?:(?<![\w.,-])\d{1,4}(?:\s?(?:bis|ter))?,?\s+)?"
        r"\b(?i:rue|avenue|av\.|boulevard|bd|place|chemin|impasse|allée|quai|route|cours|square"
        r"|voie|passage|rond-point)\s+(?:(?:de\s+la|de\s+l'|des|du|de|d'|la|le|les|l')\s*)?"
        r"[A-ZÉÈÀÂÊÎÔÛÇ][\w'’-]*(?:\s+[A-ZÉÈÀÂÊÎÔÛÇ][\w'’-]*){0,3}"
        r"(?:,\s*\d{5}\s+[A-ZÉÈÀÂÊÎÔÛÇ][\w'’-]*(?:[ -][\w'’-]+){0,3})?"
    ),
    # Borgo Porcellato, 75 / Canale Nicoletta, 29 Appartamento 3 / Calle Mayor 5 / Rua Augusta, 12
    re.compile(
        r"\b(?:Via|Viale|Piazza|Piazzale|Corso|Largo|Vicolo|Borgo|Contrada|Strada|Rotonda"
        r"|Incrocio|Stretto|Canale|Vico|Lungomare|Salita|Calle|Avenida|Avda\.|Paseo|Plaza|Camino"
        r"|Carrera|Ronda|Travesía|Rua|Travessa|Praça|Alameda|Estrada|Rodovia|Beco|Urbanización"
        r"|Pasaje|Cañada|Callejón|Glorieta|Rambla|Carretera|Cuesta|Calçada|Caminho|Rotunda"
        r"|Praceta|Quinta|Bairro|Jardim|Ladeira|Loteamento|Parque|Quadra|Residencial|Setor"
        r"|Viela|Vila|Vereda|Conjunto|Chácara|Condomínio|Esplanada|Trecho|Trevo)\s+"
        r"(?:(?:del|della|dei|degli|delle|di|da|do|dos|das|de|la|las|los|San|Santa|São)\s+)*"
        r"[A-ZÀ-Þ][\w'’-]*(?:\s+(?:de|del|da|do|di|[A-ZÀ-Þ][\w'’-]*)){0,4},?\s*(?:n[º°o.]\s*)?"
        r"\d{1,5}[a-zA-Z]?(?:\s+(?:Appartamento|Piano|Interno|Scala|Apt\.?|Piso|Puerta)\s+\w{1,4})*"
        r"(?:,?\s*\d{5}\s+[A-ZÀ-Þ][\w'’-]*(?:\s+[A-ZÀ-Þ][\w'’-]*){0,3})?"
    ),
    # Dutch: Kerkstraat 12a
    re.compile(
        r"\b[A-Z][\w-]*(?:straat|laan|plein|gracht|kade|dijk|singel|steeg|pad|hof|park|baan"
        r"|wal|markt|burg|dreef)\s+\d{1,5}[a-zA-Z]?"
    ),
)
_ADDRESS_CUE = re.compile(
    r"""(?<![\w-])(?:home\ address|billing\ address|address|lives\ at|living\ at|resides\ at|residing\ at
      |located\ at|offices?\ (?:is|are)\ (?:located\ )?at|sent\ to|ship\ to|deliver\ to
      |indirizzo|anschrift|adresse|endereço|morada|dirección|direccion|domicilio|woonadres|adres)
      \s*(?:[:=]|\bwith\b|\bis\b|\bat\b)?\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_SENTENCE_END = re.compile(r"\n|[?!;]|\.(?=\s+[A-Z]|\s*$)")


def find_names(text: str) -> Iterator[Candidate]:
    """Names after a cue word, and single name parts after ``first name``/``surname`` cues."""
    for cue in _NAME_CUE.finditer(text):
        strong = cue.group().lower() in _STRONG_CUES or text.startswith(":", cue.end())
        span = _name_after(text, cue.end(), allow_lower=strong)
        if span is not None:
            yield Candidate("PERSON", 0.8, span[0], span[1], _R_NAME)
    for cue in _PART_CUE.finditer(text):
        m = _WORD.match(text, cue.end())
        if m is None:
            continue
        word = m.group().rstrip(".")
        if word.lower() in _STOP or word in _CAP_STOP or len(word) < 2:
            continue
        yield Candidate("PERSON", 0.8, m.start(), m.start() + len(word), _R_NAME)


def _name_after(text: str, pos: int, *, allow_lower: bool) -> tuple[int, int] | None:
    words: list[tuple[int, int, str]] = []
    n = len(text)
    while pos < n and len(words) < 5:
        while pos < n and text[pos] in " \t:":
            pos += 1
        m = _WORD.match(text, pos)
        if m is None:
            break
        word = m.group()
        if word.endswith(".") and len(word) > 2:  # sentence end, not an initial
            word = word[:-1]
        if not words and word.lower() in _FILLER:
            pos = m.start() + len(word)
            continue
        words.append((m.start(), m.start() + len(word), word))
        pos = m.start() + len(word)
        if pos < n and text[pos] not in " \t":
            break
    return _choose_name(text, words, allow_lower=allow_lower)


def _choose_name(
    text: str, words: list[tuple[int, int, str]], *, allow_lower: bool
) -> tuple[int, int] | None:
    if not words:
        return None
    first = words[0][2]
    if first[0].isupper():
        if first in _CAP_STOP:
            return None
        taken: list[tuple[int, int, str]] = []
        for w in words[:4]:
            if (w[2][0].isupper() and w[2] not in _CAP_STOP) or (
                w[2].lower() in _PARTICLES and taken
            ):
                taken.append(w)
            else:
                break
        while taken and taken[-1][2].lower() in _PARTICLES:
            taken.pop()
        if len(taken) >= 2:
            return taken[0][0], taken[-1][1]
        return None
    if not allow_lower:
        return None
    # lowercase: two or three words, no common words, ending at punctuation or end of text
    for count in (3, 2):
        if len(words) < count:
            continue
        chosen = words[:count]
        if any(w[2].lower() in _STOP or not w[2].islower() for w in chosen):
            continue
        if count == 3 and chosen[1][2] not in _PARTICLES:
            continue
        end = chosen[-1][1]
        if end >= len(text) or text[end] in _TERMINATOR:
            return chosen[0][0], end
    return None


def find_addresses(text: str) -> Iterator[Candidate]:
    """Street addresses by pattern, and text with a house number after an address cue."""
    for pattern in _ADDRESS_PATTERNS:
        for m in pattern.finditer(text):
            value = m.group().rstrip(" ,")
            yield Candidate("STREET_ADDRESS", 0.75, m.start(), m.start() + len(value), _R_ADDR)
    for cue in _ADDRESS_CUE.finditer(text):
        start = cue.end()
        end_match = _SENTENCE_END.search(text, start, min(len(text), start + 140))
        end = end_match.start() if end_match else min(len(text), start + 140)
        value = text[start:end].rstrip(" ,.")
        if (
            value[:1].isalnum()
            and any(c.isdigit() for c in value)
            and sum(c.isalpha() for c in value) >= 4
            and not value.startswith("http")
            and "@" not in value
        ):
            yield Candidate("STREET_ADDRESS", 0.7, start, start + len(value), _R_ADDR)
