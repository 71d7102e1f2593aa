"""An independent set of full names in varied sentences, written by hand for issue 13 (item 5).

Not drawn from the generator of the dev corpus (Faker) or any name list: the names were made up
for this file, mixing origins, and the sentences are new (support tickets, e-mail, notes, chat,
lists, signatures). Forms: plain, lowercase, ALL-CAPS, "Last, First", several particles and
decomposed accents (NFD). A name counts as leaked when, after sanitizing with pseudonymize-
everything, its words still appear in order on word boundaries (the corpus README's ``text``
rule). Used by ``tests/detect/test_detect_names.py`` and ``bench/detect.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.detect import Finding, TextRef, extract_texts
from gateway.sanitize import sanitize_body
from tests.detect.pii_match import body_text, present

__all__ = ["BLIND_SENTENCES", "NAMED_SENTENCES", "leaked_names"]

# (sentence, the name as written in it)
NAMED_SENTENCES: tuple[tuple[str, str], ...] = (
    # plain, after a cue or in running text
    ("Please escalate the ticket that Harriet Pemberton opened this morning.", "Harriet Pemberton"),
    (
        "Our new hire, Tomasz Wierzbicki, starts on Monday in the Krakow office.",
        "Tomasz Wierzbicki",
    ),
    ("Can you summarise the complaint from Adaeze Nwachukwu in two lines?", "Adaeze Nwachukwu"),
    ("Rewrite this note so that Lars-Erik Holmgren understands the delay.", "Lars-Erik Holmgren"),
    ("Meeting notes: Kenji Watanabe agreed to review the budget.", "Kenji Watanabe"),
    ("The refund was approved by Fatima Zahra Benali on 12 March.", "Fatima Zahra Benali"),
    ("Draft a reply to Giulia Marchetti about her late delivery.", "Giulia Marchetti"),
    ("I think Oluwaseun Adebayo-Cole should lead the pilot.", "Oluwaseun Adebayo-Cole"),
    ("Send the signed contract to Marguerite Lacombe before noon.", "Marguerite Lacombe"),
    ("Thanks, Rhys Llewellyn, for covering the night shift.", "Rhys Llewellyn"),
    ("Who approved the change? It was Svetlana Morozova, I believe.", "Svetlana Morozova"),
    ("Add Deepika Raghavan to the distribution list for the audit.", "Deepika Raghavan"),
    ("Ignacio Villaverde reported that the scanner is broken again.", "Ignacio Villaverde"),
    ("Patient Eleni Papadakis asked to move her appointment.", "Eleni Papadakis"),
    ("The invoice is addressed to Cormac O'Sullivan at the Dublin branch.", "Cormac O'Sullivan"),
    ("Summarise the call between our agent and Yusuf Demirtaş.", "Yusuf Demirtaş"),
    (
        "Could you translate the letter for Ana Paula Figueiredo into English?",
        "Ana Paula Figueiredo",
    ),
    ("Vikram Chandrasekhar will present the quarterly numbers.", "Vikram Chandrasekhar"),
    (
        "Please check whether Brigitte Hoffmeister still has access to the portal.",
        "Brigitte Hoffmeister",
    ),
    ("The last message came from Nnamdi Okeke, who sounded upset.", "Nnamdi Okeke"),
    (
        "Write a birthday card for Wilhelmina Achterberg from the whole team.",
        "Wilhelmina Achterberg",
    ),
    ("Mei-Ling Zhao requested a copy of her records.", "Mei-Ling Zhao"),
    ("Forward the complaint to the supervisor, Dragan Petrović.", "Dragan Petrović"),
    ("My manager Siobhan Gallagher wants the report by Friday.", "Siobhan Gallagher"),
    ("Can you check the order history of Rafaela Moreira Dias?", "Rafaela Moreira Dias"),
    ("Keanu Kahananui called twice about the same invoice.", "Keanu Kahananui"),
    ("Hi team, Agnieszka Zielińska is out sick today.", "Agnieszka Zielińska"),
    ("The tenant, Bogdan Iliescu, says the heating has failed.", "Bogdan Iliescu"),
    ("Please thank Precious Mahlangu for the quick turnaround.", "Precious Mahlangu"),
    ("Explain the policy change to Henrietta Vandermolen in plain words.", "Henrietta Vandermolen"),
    ("Our contact at the supplier is Jun-ho Park.", "Jun-ho Park"),
    ("I forwarded the logs to Anneliese Brandstätter yesterday.", "Anneliese Brandstätter"),
    ("Sofía Carrasco Iturbe left a voicemail about the lease.", "Sofía Carrasco Iturbe"),
    ("Reminder: Thandiwe Nkosi has a follow-up visit next week.", "Thandiwe Nkosi"),
    ("The driver, Mehmet Yıldırım, was not at fault.", "Mehmet Yıldırım"),
    ("Please review the expense claim Ottilie Fairweather submitted.", "Ottilie Fairweather"),
    (
        "Quentin Beaumarchais asked whether the warranty covers water damage.",
        "Quentin Beaumarchais",
    ),
    ("Can you write a short bio for our speaker Amara Osei-Bonsu?", "Amara Osei-Bonsu"),
    ("Status update for Lukas Brzezinski: the laptop is ready.", "Lukas Brzezinski"),
    ("The guardian listed on the form is Roisin McElhinney.", "Roisin McElhinney"),
    ("Hamid Rezaei and Leilani Akana both missed the deadline.", "Hamid Rezaei"),
    ("Hamid Rezaei and Leilani Akana both missed the deadline.", "Leilani Akana"),
    ("Best regards,\nTheodora Castellane\nHead of Procurement", "Theodora Castellane"),
    ("From: Ingrid Solheimsvik\nSubject: overdue payment", "Ingrid Solheimsvik"),
    (
        "Attendees: Priyanka Venkataraman, Osvaldo Quiroga, Hedda Lindqvist.",
        "Priyanka Venkataraman",
    ),
    ("Attendees: Priyanka Venkataraman, Osvaldo Quiroga, Hedda Lindqvist.", "Osvaldo Quiroga"),
    ("Attendees: Priyanka Venkataraman, Osvaldo Quiroga, Hedda Lindqvist.", "Hedda Lindqvist"),
    ("- owner: Bartholomew Quaye\n- reviewer: Zsófia Halász", "Bartholomew Quaye"),
    ("- owner: Bartholomew Quaye\n- reviewer: Zsófia Halász", "Zsófia Halász"),
    ("Please file this under the account of Callum Abernethy.", "Callum Abernethy"),
    # lowercase (chat, quick notes)
    ("can you ask marisol etxeberria if the parcel arrived", "marisol etxeberria"),
    ("had a call with bjorn aasheim about the renewal", "bjorn aasheim"),
    ("note for later: ring wojciech stasiak back about the quote", "wojciech stasiak"),
    ("my colleague anouk verhoeven needs access to the shared drive", "anouk verhoeven"),
    ("cc ifeoma chukwuemeka on the reply please", "ifeoma chukwuemeka"),
    ("dr. radhika subramaniam signed the discharge letter", "radhika subramaniam"),
    ("customer: horatio blackwood, wants a callback", "horatio blackwood"),
    ("spoke to kalinda tjapaltjarri, she will resend the form", "kalinda tjapaltjarri"),
    ("thanks to esperanza valdivieso for the update", "esperanza valdivieso"),
    ("the package for oskar lindgren is still at the depot", "oskar lindgren"),
    ("forward this to mateusz krawczyk and close the ticket", "mateusz krawczyk"),
    ("please tell auguste delacroix-moreau the meeting moved", "auguste delacroix-moreau"),
    # ALL-CAPS
    ("URGENT: CALL BACK PERPETUA OKONJO BEFORE 5PM", "PERPETUA OKONJO"),
    ("Form field NAME: EVANGELINE THORNBURY", "EVANGELINE THORNBURY"),
    ("THE CLAIM WAS FILED BY RADOSLAW MAZUREK LAST WEEK.", "RADOSLAW MAZUREK"),
    ("Shipping label: ATTN GWENDOLYN ASHCROFT, DOCK 4", "GWENDOLYN ASHCROFT"),
    ("Escalated by HALVARD SKJELBRED after the outage.", "HALVARD SKJELBRED"),
    ("REMINDER FOR SUNITA KRISHNAMURTHY: BADGE EXPIRES FRIDAY", "SUNITA KRISHNAMURTHY"),
    ("Account holder: DESMOND OYELOWO-BAKER", "DESMOND OYELOWO-BAKER"),
    ("PLEASE VERIFY THE ADDRESS OF MARIT GJERDRUM", "MARIT GJERDRUM"),
    # Last, First
    ("Sort the list: Thistlewood, Imogen; Farrokhzad, Darius.", "Thistlewood, Imogen"),
    ("Sort the list: Thistlewood, Imogen; Farrokhzad, Darius.", "Farrokhzad, Darius"),
    ("Patient: Okwuosa, Chidinma (follow-up in two weeks)", "Okwuosa, Chidinma"),
    ("Reviewer: Kowalewski, Bartosz. Status: approved.", "Kowalewski, Bartosz"),
    (
        "Please correct the spelling of Vasquez-Ibarra, Mireya in the file.",
        "Vasquez-Ibarra, Mireya",
    ),
    ("The badge was issued to Lindholm, Astrid on Tuesday.", "Lindholm, Astrid"),
    ("Employee: Nakagawa, Hiroshi - department: logistics", "Nakagawa, Hiroshi"),
    ("Signed, Ferreira-Lobo, Inês", "Ferreira-Lobo, Inês"),
    # several particles
    ("The deed names Pedro de los Santos Arriaga as the owner.", "Pedro de los Santos Arriaga"),
    ("Ask Willemijn van den Heuvel about the Dutch invoice.", "Willemijn van den Heuvel"),
    ("Our lawyer is Jean-Baptiste de la Rochefoucauld.", "Jean-Baptiste de la Rochefoucauld"),
    ("The visa sponsor is Maria da Conceição Antunes.", "Maria da Conceição Antunes"),
    ("Koen van der Meulen booked the meeting room for Thursday.", "Koen van der Meulen"),
    ("Customer Luis del Castillo y Mendoza asked for a refund.", "Luis del Castillo y Mendoza"),
    # decomposed accents (NFD)
    ("Please call Rene\u0301e Gauthier about the delivery.", "Rene\u0301e Gauthier"),
    ("The form was filled in by Zoe\u0308 Kallistrate\u0301.", "Zoe\u0308 Kallistrate\u0301"),
    ("Follow up with Bjo\u0308rn Sta\u030ahl tomorrow.", "Bjo\u0308rn Sta\u030ahl"),
    ("Ticket owner: Franc\u0327oise Lemaître-Duval", "Franc\u0327oise Lemaître-Duval"),
    # the name right after a sentence-start word
    ("The Cordelia Ashworth account was closed on Monday.", "Cordelia Ashworth"),
    ("This Ebenezer Quartey case needs an owner.", "Ebenezer Quartey"),
)


# Written after the rules above were tuned on NAMED_SENTENCES, and measured once without any
# change to detection: an unbiased check of how the rules generalize (``bench/detect.py``).
BLIND_SENTENCES: tuple[tuple[str, str], ...] = (
    ("Could you draft an apology to Evadne Karamanlis for the mix-up?", "Evadne Karamanlis"),
    ("The locker key was handed to Tiberiu Constantinescu.", "Tiberiu Constantinescu"),
    ("Remind Oonagh Fitzmaurice that the lease ends in June.", "Oonagh Fitzmaurice"),
    ("Ngozi Ezeudu has asked for the minutes of the meeting.", "Ngozi Ezeudu"),
    ("I'm writing on behalf of Lorcan Deasy regarding his claim.", "Lorcan Deasy"),
    ("The parcel was signed for by Wiremu Tipene at 3pm.", "Wiremu Tipene"),
    ("Tell me how to address a letter to Saoirse Ní Bhriain.", "Saoirse Ní Bhriain"),
    ("Our auditor, Casimir Wróblewski, flagged two entries.", "Casimir Wróblewski"),
    ("Assign the bug to Xiadani Cuauhtémoc and close the duplicate.", "Xiadani Cuauhtémoc"),
    ("Aurelio Sbarbaro wants to know why his card was declined.", "Aurelio Sbarbaro"),
    ("Please greet Ludmila Hrabalová when she arrives.", "Ludmila Hrabalová"),
    ("Benedikt Oberhauser is covering for me until Tuesday.", "Benedikt Oberhauser"),
    ("A note from Yaw Boateng-Asare: the van broke down.", "Yaw Boateng-Asare"),
    ("Translate this for our client Rosalind Achebe-Whitfield.", "Rosalind Achebe-Whitfield"),
    ("Summarize what Takoda Redcloud said during the interview.", "Takoda Redcloud"),
    ("check if ottavio brambilla paid the second invoice", "ottavio brambilla"),
    ("meeting with greta nyqvist moved to 2pm", "greta nyqvist"),
    ("pls send the forms to kwabena mensah-bonsu asap", "kwabena mensah-bonsu"),
    ("my neighbour ilse vanderbruggen found the keys", "ilse vanderbruggen"),
    ("spoke with dagny thorvaldsen, she confirmed the order", "dagny thorvaldsen"),
    ("CONTACT: SEVERIN ACHTERHOF, EXT 221", "SEVERIN ACHTERHOF"),
    ("THE KEYS ARE WITH PRUDENCE OYEBANJI AT RECEPTION", "PRUDENCE OYEBANJI"),
    ("Approved: Haldane, Fenella (finance)", "Haldane, Fenella"),
    ("Owner of record: Quispe, Yupanqui", "Quispe, Yupanqui"),
    ("Alejandro de la Fuente Ybarra booked two tickets.", "Alejandro de la Fuente Ybarra"),
    ("Please ask Jan-Willem van der Zanden to call back.", "Jan-Willem van der Zanden"),
    ("The Philippa Ravenscroft file is missing a signature.", "Philippa Ravenscroft"),
    ("Jo\u0301zsef Szabo\u0301 will collect the parcel.", "Jo\u0301zsef Szabo\u0301"),
    ("Regards,\nEulalia Montesinos\nOperations", "Eulalia Montesinos"),
    ("Who is Ignatius Mbeki-Walters and why is he in the CC list?", "Ignatius Mbeki-Walters"),
)


def leaked_names(
    analyze: Callable[[Sequence[TextRef]], list[Finding]],
    sentences: Sequence[tuple[str, str]] = NAMED_SENTENCES,
) -> list[tuple[str, str]]:
    """(sentence, name) for every name still present after pseudonymizing what ``analyze`` finds."""
    leaked = []
    for sentence, name in sentences:
        body = {"model": "m", "messages": [{"role": "user", "content": sentence}]}
        findings = analyze(extract_texts(body))
        sanitized = sanitize_body(body, findings, {}).body
        value = {"match": [{"type": "text", "key": name}]}
        if present(value, body_text(sanitized)):
            leaked.append((sentence, name))
    return leaked
