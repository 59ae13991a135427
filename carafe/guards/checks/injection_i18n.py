"""The injection rule families in German, French, Spanish, Italian, Dutch, Portuguese and Polish.

Public attack data in these languages is thin, so each language gets the three
families that carry most direct attacks, built from its own words:

- *override*: a verb of ignoring + a determiner of "previous/all/your" + a word for
  instructions, in either order ("Ignoriere alle vorherigen Anweisungen",
  "ne tiens pas compte des consignes précédentes");
- *exfiltration*: a verb of showing + the system prompt / hidden instructions;
- *persona*: "you are now / pretend" + no rules, uncensored, developer mode, DAN.

Word lists, not translations of the English regexes: word order and inflection
differ (Polish cases, Romance post-nominal adjectives). Hard negatives (ordinary
questions with *ignorieren*, *règles*, *contraseña*...) are in the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_F = re.IGNORECASE | re.DOTALL
_GAP = r"[^.!?\n]{0,40}?"
_NEAR = r"[^.!?\n]{0,25}?"


@dataclass(frozen=True)
class Words:
    """One language's words for the three families (regex alternations)."""

    ignore: str
    previous: str  # determiners and adjectives: all, previous, above, your
    rules: str  # instructions, rules, system prompt
    show: str
    secret_prompt: str
    persona: str  # you are now, pretend, act as
    unbound: str  # no rules, uncensored, developer mode
    new_rules: str  # "new instructions:"
    everything: str = ""  # "forget everything you were told": everything + (told|above|before)
    hidden: str = ""  # hidden/secret instructions, asked for with or without a verb
    above: str = ""  # "repeat the text above this message"
    to_ai: str = ""  # "note to the AI"


LANGUAGES: dict[str, Words] = {
    "de": Words(
        ignore=r"ignorier\w*|vergiss|vergessen\s+sie|missacht\w*|übergeh\w*|verwirf|verwerfen\s+sie|hör\w*\s+nicht\s+auf",
        previous=r"alle[ns]?|vorherig\w*|vorig\w*|bisherig\w*|obig\w*|vorangegangen\w*|vorstehend\w*|ursprünglich\w*|"
        r"deine[n]?|ihre[n]?|sämtlich\w*|oben",
        rules=r"anweisung\w*|instruktion\w*|regeln|vorgaben|befehl\w*|richtlinie\w*|system-?prompts?|"
        r"systemnachricht\w*|systemanweisung\w*|aufgaben|angaben|einschränkung\w*",
        show=r"zeig\w*|gib|geben\s+sie|nenn\w*|wiederhol\w*|verrat\w*|drucke?|offenbar\w*|schreib\w*|ausgeben|teile?",
        secret_prompt=r"system-?prompts?|systemnachricht\w*|systemanweisung\w*|"
        r"(deine|ihre|die)\s+(ursprünglich\w*|versteckt\w*|geheim\w*|intern\w*|initial\w*|erst\w*)\s+"
        r"(anweisung\w*|instruktion\w*|prompt|konfiguration|regeln)",
        persona=r"du\s+bist\s+(jetzt|nun|ab\s+sofort|ab\s+jetzt)|sie\s+sind\s+(jetzt|nun|ab\s+sofort)|ab\s+(jetzt|sofort)\s+bist\s+du|"
        r"tu\s+so,?\s+als|stell\s+dir\s+vor,?\s+du\s+(bist|wärst|hättest)|spiel\w*\s+die\s+rolle|verhalte\s+dich\s+wie|agiere\s+als",
        unbound=r"ethisch\w*\s+(grenzen|regeln|schranken)|"
        r"ohne\s+(jegliche\s+|alle\s+)?(regeln|einschränkungen|grenzen|filter|zensur|richtlinien)|"
        r"keine\s+(regeln|einschränkungen|grenzen|filter|zensur)|uneingeschränkt\w*|unzensiert\w*|entwicklermodus|(?-i:DAN)",
        new_rules=r"neue\s+(anweisung(en)?|regeln|aufgaben?)\s*:",
        everything=r"alles\W+(was|oben|vorher|zuvor|bisher)[^.!?\n]{0,30}?(gesagt|gegeben|steht|wurde)?",
        hidden=r"(versteckt|geheim|verborgen)\w*\s+(anweisung|instruktion|vorgabe)\w*|(ursprünglich|initial)\w*\s+(anweisung|instruktion)\w*\s+(ins|auf)\s+\w+",
        above=r"(text|nachricht|inhalt)\w*\s+(über|oberhalb)\s+(dieser|meiner)",
        to_ai=r"(hinweis|notiz|nachricht|anweisung)\s+(an|für)\s+(die\s+|den\s+)?(ki|ai|assistent\w*|sprachmodell)",
    ),
    "fr": Words(
        ignore=r"ignor\w*|oubli\w*|néglig\w*|ne\s+(tiens|tenez)\s+(pas|plus)\s+compte|(fais|faites)\s+(abstraction|fi)|"
        r"écarte\w*|n'?obéis\s+plus",
        previous=r"toute?s?|tous|précédent\w*|antérieur\w*|ci-dessus|initia\w*|d'origine|tes|vos|ton|votre",
        rules=r"instructions?|consignes?|règles?|directives?|ordres|prompt\s+système|message\s+système|restrictions?",
        show=r"révèle\w*|révélez|affiche\w*|montre\w*|donne\w*|répète\w*|répétez|imprime\w*|divulgue\w*|écri\w*|"
        r"recopie\w*|partage\w*|dis-moi|dites-moi|indique\w*",
        secret_prompt=r"prompt\s+(du\s+)?système|message\s+(du\s+)?système|"
        r"(instructions|consignes)\s+(système|initiales|cachées|secrètes|d'origine)|(tes|vos)\s+(instructions|consignes)|"
        r"(ta|votre)\s+configuration",
        persona=r"tu\s+es\s+(maintenant|désormais|dorénavant)|vous\s+êtes\s+(maintenant|désormais)|"
        r"à\s+partir\s+de\s+maintenant,?\s+tu|fais\s+comme\s+si|imagine\s+que\s+tu|fais\s+semblant|agis\s+comme|joue\s+le\s+rôle",
        unbound=r"limites?\s+éthiques?|"
        r"sans\s+(aucune\s+)?(règles?|restrictions?|limites?|filtres?|censure)|aucune\s+(règle|restriction|limite)|"
        r"non\s+censuré\w*|débridé\w*|mode\s+développeur|(?-i:DAN)",
        new_rules=r"nouvelles\s+(instructions|consignes|règles)\s*:",
        everything=r"tout\s+ce\s+(qu'?on|que\s+l'?on|qui)\s+[^.!?\n]{0,20}?(dit|donné|écrit|précède)",
        hidden=r"(instructions|consignes)\s+(cachées|secrètes|internes)|(instructions|consignes)\s+initiales\s+en\s+\w+",
        above=r"(texte|message|contenu)\s+(au-dessus|ci-dessus|avant)\s+(de\s+)?(ce|mon)",
        to_ai=r"(note|message|consigne)\s+(pour|à)\s+(l'|l’)?(ia|ai|assistant|intelligence\s+artificielle)",
    ),
    "es": Words(
        ignore=r"ignora\w*|ignore\w*|olvida\w*|olvide\w*|(haz|haga|hagan)\s+caso\s+omiso|no\s+(hagas|haga)\s+caso|"
        r"descarta\w*|omite\w*|pasa\s+por\s+alto",
        previous=r"todas?|todos|anteriores|previas?|previos|de\s+arriba|iniciales|originales|tus|sus",
        rules=r"instrucciones|instrucción|indicaciones|reglas|directrices|órdenes|normas|restricciones|"
        r"prompt\s+del\s+sistema|mensaje\s+del\s+sistema",
        show=r"revela\w*|muestra\w*|muéstrame|dime|dame|repite\w*|imprime\w*|escribe\w*|comparte\w*|divulga\w*|enseña\w*",
        secret_prompt=r"prompt\s+(del\s+)?sistema|mensaje\s+del\s+sistema|"
        r"instrucciones\s+(del\s+sistema|iniciales|ocultas|secretas|originales)|tus\s+instrucciones|tu\s+configuración",
        persona=r"ahora\s+eres|a\s+partir\s+de\s+ahora,?\s+(eres|serás|actúa\w*)|finge\s+(ser|que)|actúa\s+como|"
        r"imagina\s+que\s+eres|haz\s+de\s+cuenta|desde\s+ahora\s+eres",
        unbound=r"límites\s+éticos|"
        r"sin\s+(ninguna\s+)?(reglas|restricciones|límites|filtros|censura)|ninguna\s+(regla|restricción)|"
        r"sin\s+censura|modo\s+desarrollador|(?-i:DAN)",
        new_rules=r"nuevas\s+(instrucciones|reglas)\s*:",
        everything=r"todo\s+lo\s+que\s+[^.!?\n]{0,20}?(dijeron|dicho|escrito|indicaron)",
        hidden=r"instrucciones\s+(ocultas|secretas|internas)|instrucciones\s+iniciales\s+al\s+\w+",
        above=r"(texto|mensaje|contenido)\s+(que\s+está\s+)?(encima|arriba|antes)\s+de\s+(este|mi)",
        to_ai=r"(nota|mensaje|aviso)\s+para\s+(la\s+|el\s+)?(ia|ai|asistente|inteligencia\s+artificial)",
    ),
    "it": Words(
        ignore=r"ignora\w*|ignori|dimentica\w*|dimentichi|trascura\w*|non\s+(tenere|tener)\s+conto|non\s+considerare|"
        r"tralascia\w*",
        previous=r"tutte?|tutti|precedent\w*|sopra|iniziali|originali|tue|tuoi|sue|suoi",
        rules=r"istruzion\w*|indicazion\w*|regole|direttive|ordini|restrizioni|prompt\s+di\s+sistema|messaggio\s+di\s+sistema",
        show=r"rivela\w*|mostra\w*|dimmi|dammi|ripeti\w*|stampa\w*|scrivi\w*|condividi\w*|svela\w*",
        secret_prompt=r"prompt\s+di\s+sistema|messaggio\s+di\s+sistema|"
        r"istruzioni\s+(di\s+sistema|iniziali|nascoste|segrete|originali)|(le\s+)?tue\s+istruzioni|(la\s+)?tua\s+configurazione",
        persona=r"(ora|adesso)\s+sei|da\s+(ora|adesso)\s+in\s+poi,?\s+(sei|sarai|agisci)|fingi\s+di|fai\s+finta|"
        r"agisci\s+come|immagina\s+di\s+essere|interpreta\s+il\s+ruolo",
        unbound=r"limiti\s+etici|"
        r"senza\s+(alcuna\s+|nessuna\s+)?(regole|restrizioni|limiti|filtri|censura)|nessuna\s+(regola|restrizione)|"
        r"non\s+censurat\w*|modalità\s+sviluppatore|(?-i:DAN)",
        new_rules=r"nuove\s+(istruzioni|regole)\s*:",
        everything=r"tutto\s+(quello|ciò)\s+che\s+[^.!?\n]{0,20}?(detto|dato|scritto)",
        hidden=r"istruzioni\s+(nascoste|segrete|interne)|istruzioni\s+iniziali\s+in\s+\w+",
        above=r"(testo|messaggio|contenuto)\s+(sopra|prima\s+di)\s+(questo|il\s+mio)",
        to_ai=r"(nota|messaggio|avviso)\s+per\s+(l'|l’)?(ia|ai|assistente|intelligenza\s+artificiale)",
    ),
    "nl": Words(
        ignore=r"negeer|vergeet|veronachtzaam|houd\s+geen\s+rekening|let\s+niet\s+op|sla\s+\w+\s+over",
        previous=r"alle|eerdere|vorige|voorgaande|bovenstaande|oorspronkelijke|je|jouw|uw",
        rules=r"instructies?|aanwijzingen|regels|richtlijnen|opdrachten|bevelen|systeemprompt|systeembericht|beperkingen",
        show=r"toon|laat\s+\w+\s+zien|geef|herhaal|print|onthul|vertel|deel|schrijf|citeer",
        secret_prompt=r"systeemprompt|systeembericht|systeeminstructies|"
        r"(je|jouw|uw)\s+(oorspronkelijke\s+|verborgen\s+|geheime\s+|interne\s+)?(instructies|prompt|configuratie)|"
        r"verborgen\s+instructies",
        persona=r"je\s+bent\s+(nu|vanaf\s+nu)|vanaf\s+nu\s+ben\s+je|doe\s+alsof|speel\s+de\s+rol|gedraag\s+je\s+als|"
        r"stel\s+je\s+voor\s+dat\s+je",
        unbound=r"ethische\s+grenzen|"
        r"zonder\s+(enige\s+)?(regels|beperkingen|grenzen|filters|censuur)|geen\s+(regels|beperkingen|filters)|"
        r"ongecensureerd\w*|ontwikkelaarsmodus|(?-i:DAN)",
        new_rules=r"nieuwe\s+(instructies|regels)\s*:",
        everything=r"alles\s+wat\s+[^.!?\n]{0,20}?(verteld|gezegd|gegeven|geschreven)",
        hidden=r"(verborgen|geheime|interne)\s+instructies|oorspronkelijke\s+instructies\s+naar\s+het\s+\w+",
        above=r"(tekst|bericht|inhoud)\s+(boven|vóór|voor)\s+(dit|mijn)",
        to_ai=r"(notitie|bericht|opmerking)\s+(voor|aan)\s+(de\s+)?(ai|ki|assistent)",
    ),
    "pt": Words(
        ignore=r"ignor[ae]\w*|esqueç[ae]\w*|esquece|desconsider[ae]\w*|despreze|não\s+(siga|obedeça|considere)",
        previous=r"todas?|todos|anteriores|prévias|acima|iniciais|originais|suas|tuas",
        rules=r"instruções|instrução|orientações|regras|diretrizes|ordens|restrições|prompt\s+do\s+sistema|"
        r"mensagem\s+do\s+sistema",
        show=r"revel[ae]\w*|mostr[ae]\w*|me\s+mostre|diga|diz|me\s+dê|repit[ae]\w*|imprim[ae]\w*|escrev[ae]\w*|"
        r"compartilh[ae]\w*|divulgu?[ae]\w*",
        secret_prompt=r"prompt\s+do\s+sistema|mensagem\s+do\s+sistema|"
        r"instruções\s+(do\s+sistema|iniciais|ocultas|secretas|originais)|suas\s+instruções|sua\s+configuração",
        persona=r"agora\s+(você\s+)?é|você\s+agora\s+é|a\s+partir\s+de\s+agora,?\s+(você\s+)?(é|será|aja)|"
        r"finja\s+(ser|que)|aja\s+como|imagine\s+que\s+(você\s+)?é",
        unbound=r"limites\s+éticos|"
        r"sem\s+(nenhuma\s+)?(regras|restrições|limites|filtros|censura)|nenhuma\s+(regra|restrição)|"
        r"sem\s+censura|modo\s+desenvolvedor|(?-i:DAN)",
        new_rules=r"novas\s+(instruções|regras)\s*:",
        everything=r"tudo\s+(o\s+)?que\s+[^.!?\n]{0,20}?(disseram|dito|escrito|deram)",
        hidden=r"instruções\s+(ocultas|secretas|internas)|instruções\s+iniciais\s+para\s+o\s+\w+",
        above=r"(texto|mensagem|conteúdo)\s+(acima|antes)\s+(desta|da\s+minha)",
        to_ai=r"(nota|mensagem|aviso)\s+para\s+(a\s+|o\s+)?(ia|ai|assistente|inteligência\s+artificial)",
    ),
    "pl": Words(
        ignore=r"zignoruj\w*|ignoruj\w*|zapomnij\w*|pomiń|pomijaj\w*|nie\s+(zwracaj|stosuj|przestrzegaj|słuchaj)\w*|odrzuć",
        previous=r"wszystk\w*|poprzedn\w*|wcześniejsz\w*|swoj\w*|swoi\w*|twoj\w*|twoi\w*|powyższ\w*|powyżej|dotychczasow\w*|początkow\w*",
        rules=r"instrukcj\w*|polece\w*|zasad\w*|reguł\w*|wytyczn\w*|rozkaz\w*|ogranicze\w*|prompt\w*\s+systemow\w*|"
        r"komunikat\w*\s+systemow\w*",
        show=r"pokaż|ujawnij|podaj|powtórz|wypisz|wydrukuj|napisz|zdradź|udostępnij|wyświetl|przekaż",
        secret_prompt=r"prompt\w*\s+systemow\w*|komunikat\w*\s+systemow\w*|"
        r"instrukcj\w*\s+(systemow\w*|początkow\w*|ukryt\w*|tajn\w*)|(swoje|twoje)\s+instrukcje|"
        r"(swoją|twoją)\s+konfiguracj\w*|(ukryt|tajn|początkow|oryginaln)\w*\s+instrukcj\w*",
        persona=r"jesteś\s+(teraz|od\s+teraz)|od\s+teraz\s+(jesteś|działasz)|wyobraź\s+sobie|udawaj|wciel\s+się|zachowuj\s+się\s+jak|"
        r"wyobraź\s+sobie,?\s+że\s+jesteś|działaj\s+jako",
        unbound=r"granic\w*\s+etyczn\w*|"
        r"bez\s+(żadnych\s+)?(zasad|ograniczeń|reguł|filtrów|cenzury)|żadnych\s+(zasad|ograniczeń|reguł)|"
        r"nieocenzurowan\w*|tryb\w*\s+(dewelopera|programisty)|(?-i:DAN)",
        new_rules=r"nowe\s+(instrukcje|zasady|polecenia)\s*:",
        everything=r"wszystko,?\s+co\s+[^.!?\n]{0,20}?(powiedziano|mówiono|napisano|dano)",
        hidden=r"(ukryt|tajn|wewnętrzn)\w*\s+instrukcj\w*|początkowe\s+instrukcje\s+na\s+\w+",
        above=r"(tekst|wiadomoś\w*|treść)\s+(powyżej|nad)\s+(tej|mojej)",
        to_ai=r"(notatka|wiadomość|uwaga|polecenie)\s+dla\s+(ai|si|asystenta|sztucznej\s+inteligencji)",
    ),
}


# "[SYSTEM MESSAGE]" in any of the languages: a fake authority tag.
SYSTEM_TAG = re.compile(
    r"\[\s*(system\w*|message\s+syst[eè]me|mensaje\s+del\s+sistema|messaggio\s+di\s+sistema|systeembericht|"
    r"mensagem\s+do\s+sistema|komunikat\s+systemowy)\s*\]",
    _F,
)


def _families(w: Words) -> dict[str, list[re.Pattern[str]]]:
    b = r"(?<!\w)(?:{})(?!\w)"  # word edges that hold for accented letters too
    return {
        "instruction_override": [
            re.compile(b.format(w.ignore) + _GAP + b.format(w.previous) + _NEAR + b.format(w.rules), _F),
            re.compile(b.format(w.ignore) + _GAP + b.format(w.rules) + _NEAR + b.format(w.previous), _F),
            re.compile(b.format(w.new_rules), _F),
            re.compile(b.format(w.ignore) + r"\s+" + b.format(w.everything), _F),
        ],
        "prompt_exfiltration": [
            re.compile(b.format(w.show) + _GAP + b.format(w.secret_prompt), _F),
            re.compile(b.format(w.hidden), _F),
            re.compile(b.format(w.show) + _GAP + b.format(w.above), _F),
        ],
        "roleplay_jailbreak": [re.compile(b.format(w.persona) + r"[^.!?\n]{0,80}?" + b.format(w.unbound), _F)],
        "addressed_to_model": [re.compile(b.format(w.to_ai), _F)],
    }


FAMILIES_BY_LANGUAGE: dict[str, dict[str, list[re.Pattern[str]]]] = {
    lang: _families(words) for lang, words in LANGUAGES.items()
}


def _anchor(w: Words) -> re.Pattern[str]:
    """Words every rule of a language needs (its verbs of ignoring, its names of the system prompt,
    its personas...), in one pattern: a text without any of them cannot match the language's
    rules, so most texts cost one scan per language."""
    words = "|".join(
        f"(?:{x})" for x in (w.ignore, w.secret_prompt, w.above, w.persona, w.new_rules, w.hidden, w.to_ai) if x
    )
    return re.compile(rf"(?<!\w)(?:{words})(?!\w)", _F)


ANCHORS = {lang: _anchor(words) for lang, words in LANGUAGES.items()}


def match_i18n(text: str) -> tuple[str, str] | None:
    """(family, language) of the first rule that matches ``text``, or None."""
    if SYSTEM_TAG.search(text):
        return "instruction_override", "any"
    for lang, families in FAMILIES_BY_LANGUAGE.items():
        if not ANCHORS[lang].search(text):
            continue
        for family, patterns in families.items():
            if any(p.search(text) for p in patterns):
                return family, lang
    return None
