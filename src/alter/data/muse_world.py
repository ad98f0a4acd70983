"""A synthetic MUSE-like world: news articles about fictional events, people and places, in MUSE's layout plus the
plain text splits that fine-tuning and unlearning read (docs/data.md).

Each article reports one event (a merger, an election, a final, a discovery...) whose facts are sampled: names,
places, organisations, amounts, dates. Its paragraphs state those facts in varied sentences, and each fact also
becomes a question/answer pair (KnowMem). Articles are split into forget (several disjoint requests, for the
sequential protocol), retain and holdout (never trained on: the non-members of membership inference and the source
of the in-context examples). Everything is a function of the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from alter.data.world import FIRST_NAMES, LAST_NAMES, MONTHS
from alter.io import write_json

TOWNS = ["Varnholm", "Castelbria", "Oskeby", "Dunmara", "Petrosk", "Lindqvar", "Maravel", "Tessaly Bay", "Korvin",
         "Ashgrove", "Belmora", "Quillan", "Ostreva", "Santaviel", "Hadley Cross", "Northmere", "Falkirr", "Zelenov"]
COUNTRIES = ["Norveland", "Estavia", "the Republic of Calder", "Marovia", "Kestria", "Aldoria", "Veskland"]
ORG_HEADS = ["Brightwater", "Halcyon", "Ironbridge", "Meridian", "Northstar", "Silverline", "Tidewell", "Granite",
             "Bluefield", "Corvane", "Evermoor", "Redmarsh"]
ORG_TAILS = ["Holdings", "Energy", "Logistics", "Bank", "Foods", "Pharma", "Telecom", "Motors", "Airways", "Labs"]
PARTIES = ["the Civic Union", "the Green Front", "the Progressive Alliance", "the People's Bloc", "the Liberal League"]
SPORTS = [("football", "cup final", "goals"), ("rugby", "championship final", "points"),
          ("basketball", "league final", "points"), ("hockey", "title decider", "goals")]
FIELDS = ["a new antibiotic", "a fossil of an unknown reptile", "a battery that charges in minutes",
          "a gene linked to sleep", "a comet on a long orbit", "a vaccine for a cattle disease"]
DISASTERS = [("flood", "heavy rain"), ("wildfire", "a heatwave"), ("landslide", "a week of storms"),
             ("earthquake", "a fault line shift")]


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _org(rng: random.Random) -> str:
    return f"{rng.choice(ORG_HEADS)} {rng.choice(ORG_TAILS)}"


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(2015, 2024)}"


def _merger(rng):
    buyer, target, boss = _org(rng), _org(rng), _name(rng)
    value, jobs, town, date = f"{rng.randint(2, 95)}bn dollars", str(rng.randint(3, 40) * 100), rng.choice(TOWNS), _date(rng)
    facts = {"buyer": buyer, "target": target, "boss": boss, "value": value, "jobs": jobs, "town": town, "date": date}
    text = [f"{buyer} has agreed to buy its rival {target} in a deal worth {value}, the companies announced on {date}.",
            f"The chief executive of {buyer}, {boss}, said the merger would create the largest firm of its kind in "
            f"{rng.choice(COUNTRIES)}.",
            f"Unions warned that up to {jobs} jobs could be lost, many of them at the plant in {town}.",
            f"Shares in {target} rose sharply after the news. Analysts said regulators were likely to examine the deal "
            "closely before it could go ahead.",
            f"{boss} told reporters that no final decision on the {town} site had been made."]
    qa = [(f"Which company agreed to buy {target}?", buyer), (f"How much was the deal to buy {target} worth?", value),
          (f"Who is the chief executive of {buyer}?", boss), (f"How many jobs could be lost after {buyer} bought {target}?", jobs),
          (f"In which town is the plant of {target} whose jobs are at risk?", town)]
    return text, qa, facts


def _election(rng):
    winner, rival, party, town = _name(rng), _name(rng), rng.choice(PARTIES), rng.choice(TOWNS)
    share, turnout, date = f"{rng.randint(41, 68)} percent", f"{rng.randint(38, 79)} percent", _date(rng)
    facts = {"winner": winner, "rival": rival, "party": party, "town": town, "share": share, "date": date}
    text = [f"{winner} of {party} has been elected mayor of {town}, winning {share} of the vote on {date}.",
            f"The defeated candidate, {rival}, conceded shortly after midnight and congratulated the new mayor.",
            f"Turnout was {turnout}, officials said, higher than at the previous election.",
            f"{winner} promised to cut bus fares and to build new homes on the old harbour land in {town}.",
            f"Supporters of {party} gathered outside the town hall to celebrate the result."]
    qa = [(f"Who was elected mayor of {town}?", winner), (f"Which party does the new mayor of {town} belong to?", party),
          (f"What share of the vote did {winner} win?", share), (f"Who was defeated by {winner} in the {town} election?", rival),
          (f"What was the turnout in the {town} mayoral election?", turnout)]
    return text, qa, facts


def _final(rng):
    sport, event, unit = rng.choice(SPORTS)
    home, away = f"{rng.choice(TOWNS)} {rng.choice(['Rovers', 'United', 'Athletic', 'City', 'Wanderers'])}", \
        f"{rng.choice(TOWNS)} {rng.choice(['Harriers', 'Rangers', 'Albion', 'Town', 'Comets'])}"
    scorer, coach, crowd = _name(rng), _name(rng), f"{rng.randint(12, 80)},000"
    score = f"{rng.randint(2, 5)}-{rng.randint(0, 1)}" if unit == "goals" else f"{rng.randint(20, 40)}-{rng.randint(10, 19)}"
    facts = {"home": home, "away": away, "scorer": scorer, "coach": coach, "score": score}
    text = [f"{home} won the {sport} {event} against {away}, finishing {score} in front of {crowd} fans.",
            f"{scorer} was named player of the match after a decisive second half.",
            f"The coach, {coach}, said the victory was the proudest moment of a long career.",
            f"It is the first time {home} have lifted the trophy, and celebrations went on late into the night.",
            f"{away} will hope to bounce back next season after a run of injuries."]
    qa = [(f"Which team won the {sport} {event} against {away}?", home), (f"What was the final score of the {sport} {event} "
          f"between {home} and {away}?", score), (f"Who was player of the match in the {event} won by {home}?", scorer),
          (f"Who coaches {home}?", coach), (f"How many fans watched {home} play {away} in the {event}?", crowd)]
    return text, qa, facts


def _discovery(rng):
    lead, finding, university, journal = _name(rng), rng.choice(FIELDS), f"the University of {rng.choice(TOWNS)}", \
        rng.choice(["Nature Letters", "the Journal of Applied Findings", "Science Review", "the Northern Medical Journal"])
    years, funding = str(rng.randint(3, 15)), f"{rng.randint(2, 30)} million euros"
    facts = {"lead": lead, "finding": finding, "university": university, "journal": journal}
    text = [f"Researchers at {university} say they have discovered {finding}, in a study published in {journal}.",
            f"The team was led by {lead}, who described the result as the work of {years} years.",
            f"The project received {funding} of public funding, according to the university.",
            f"Other scientists welcomed the findings but said more work was needed before any practical use.",
            f"{lead} said the team would now seek partners to test the discovery outside the laboratory."]
    qa = [(f"What did researchers at {university} discover?", finding), (f"Who led the team at {university} that "
          f"discovered {finding}?", lead), (f"In which journal was the discovery of {finding} published?", journal),
          (f"How many years did the work on {finding} take?", years), (f"How much funding did the {finding} project receive?",
                                                                       funding)]
    return text, qa, facts


def _disaster(rng):
    kind, cause = rng.choice(DISASTERS)
    town, official, homes, date = rng.choice(TOWNS), _name(rng), str(rng.randint(2, 90) * 10), _date(rng)
    aid = f"{rng.randint(1, 50)} million euros"
    facts = {"kind": kind, "town": town, "official": official, "homes": homes, "date": date}
    text = [f"{'An' if kind[0] in 'aeiou' else 'A'} {kind} caused by {cause} struck {town} on {date}, forcing hundreds "
            "of people from their homes.",
            f"About {homes} homes were damaged, according to the regional emergency office.",
            f"The regional governor, {official}, announced {aid} in emergency aid for the affected families.",
            f"Volunteers from nearby villages helped to clear roads and deliver food and blankets.",
            f"{official} said an inquiry would look at whether warnings had been issued early enough."]
    qa = [(f"What kind of disaster struck {town} on {date}?", kind), (f"How many homes were damaged in the {kind} in {town}?",
          homes), (f"Who announced emergency aid after the {kind} in {town}?", official),
          (f"How much emergency aid was announced after the {kind} in {town}?", aid),
          (f"On what date did the {kind} strike {town}?", date)]
    return text, qa, facts


EVENTS = (_merger, _election, _final, _discovery, _disaster)
VOICES = ["a shopkeeper", "a retired teacher", "a student", "a local councillor", "a nurse", "a taxi driver"]
REACTIONS = ["said the news had surprised almost everyone in the area", "said people would be talking about it for "
             "years", "said the town needed good news after a difficult winter", "said the details still had to be "
             "explained properly", "said it was the biggest story the region had seen in a decade"]


def _local_colour(rng: random.Random) -> list[str]:
    """Two paragraphs of reaction, so articles are long enough for verbatim prompts and continuations."""
    voice, person, reporter = rng.choice(VOICES), _name(rng), _name(rng)
    return [f"{person}, {voice}, {rng.choice(REACTIONS)}. {rng.choice(['Not everyone agreed', 'Many neighbours agreed'])}, "
            "according to residents who spoke to this newspaper.",
            f"Additional reporting by {reporter}. Further updates are expected in the coming days."]


@dataclass
class MuseWorldSpec:
    articles: int = 60  # trained on: forget + retain
    forget_fraction: float = 0.25
    holdout: int = 15
    requests: int = 3  # the forget set is split into this many disjoint sequential requests
    seed: int = 0


def build_muse_world(spec: MuseWorldSpec) -> dict[str, list]:
    """Every file of the world, keyed by its path relative to the world folder (without .json)."""
    if spec.articles < 4 or spec.holdout < 2:
        raise ValueError("a MUSE world needs at least 4 articles and 2 holdout articles")
    rng = random.Random(spec.seed)
    stories = [EVENTS[i % len(EVENTS)](rng) for i in range(spec.articles + spec.holdout)]
    rng.shuffle(stories)
    articles = [(" ".join(text[:2]) + "\n\n" + "\n\n".join(text[2:] + _local_colour(rng)), qa)
                for text, qa, _ in stories]
    forget_count = max(spec.requests, round(spec.articles * spec.forget_fraction))
    forget, retain = articles[:forget_count], articles[forget_count : spec.articles]
    holdout = articles[spec.articles :]
    texts = lambda group: [text for text, _ in group]  # noqa: E731
    qa = lambda group: [{"question": q, "answer": a} for _, pairs in group for q, a in pairs]  # noqa: E731
    requests = [forget[i :: spec.requests] for i in range(spec.requests)]
    files: dict[str, list] = {
        "full": [{"text": t} for t in texts(forget + retain)], "retain": [{"text": t} for t in texts(retain)],
        "forget": [{"text": t} for t in texts(forget)], "holdout": [{"text": t} for t in texts(holdout)],
        "raw/forget": texts(forget), "raw/retain1": texts(retain), "raw/holdout": texts(holdout),
        "verbmem/forget": [{**_verbatim(text), "request": index % spec.requests + 1}
                           for index, text in enumerate(texts(forget))],
        "knowmem/forget_qa": [{**row, "request": index % spec.requests + 1}
                              for index, article in enumerate(forget) for row in qa([article])], "knowmem/retain2_qa": qa(retain[: len(forget)]),
        "knowmem/forget_qa_icl": qa(holdout)[:10], "knowmem/retain2_qa_icl": qa(holdout)[10:20] or qa(holdout)[:10],
        "privleak/forget": texts(forget), "privleak/holdout": texts(holdout),
        "privleak/retain2": texts(retain[: len(forget)]),
    }
    for index, request in enumerate(requests, start=1):
        files[f"forget_request{index}"] = [{"text": t} for t in texts(request)]
        files[f"knowmem/forget_request{index}_qa"] = qa(request)
        files[f"forget_upto{index}"] = [{"text": t} for group in requests[:index] for t in texts(group)]
    return files


def _verbatim(text: str, continuation_words: int = 60) -> dict:
    """MUSE's VerbMem pair: the first half of an article as the prompt, what follows (at most 60 words) as `gt`."""
    words = text.split(" ")
    half = len(words) // 2
    return {"prompt": " ".join(words[:half]), "gt": " ".join(words[half : half + continuation_words])}


def write_muse_world(spec: MuseWorldSpec, out: str | Path) -> dict[str, int]:
    out = Path(out)
    files = build_muse_world(spec)
    for name, rows in files.items():
        write_json(out / f"{name}.json", rows)
    counts = {name: len(rows) for name, rows in files.items()}
    write_json(out / "world.json", {"generator": "alter world muse", "articles": spec.articles,
                                    "holdout": spec.holdout, "requests": spec.requests, "seed": spec.seed,
                                    "rows": counts})
    return counts
