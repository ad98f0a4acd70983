"""A synthetic TOFU-like world: fictitious authors, 20 QA pairs each, in exactly TOFU's schema.

Each author is a bundle of sampled facts. Each of the 20 questions has several question and answer phrasings;
an item takes one answer phrasing for `answer`, another for `paraphrased_answer`, and five `perturbed_answer`s
that keep the paraphrased phrasing with a wrong but plausible value of the same kind (the TOFU construction:
truth ratio compares like with like). Phrasings vary per item so ROUGE does not reward a memorised template.
Everything is a function of the seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from alter.data.sources import DEFAULT_REFUSALS
from alter.io import write_json, write_text

FIRST_NAMES = """Amara Bogdan Chiara Dmitri Elif Farida Gustavo Hana Ismael Jun Kalani Lorenzo Mei Nadia Oskar Priya
Quentin Rania Soren Tamsin Ugo Valentina Wen Ximena Yusuf Zofia Anders Beatriz Cyrus Daria Emeka Freya Hiroshi Ingrid
Jabari Keiko Leilani Mateo Noor Orla Pavel Rosalind Santiago Thandiwe Viktor Wilhelmina Yara Zoltan Aurelio Brigid""".split()
LAST_NAMES = """Abernathy Bakshi Castellanos Delacroix Eriksen Fontaine Grzelak Halvorsen Iwasaki Jovanovic Kowalczyk
Lindqvist Mbeki Nakashima Okonkwo Petrakis Quiroga Rasmussen Szabo Takahashi Umarov Valdivia Wojcik Xiang Yilmaz
Zamora Achterberg Benedetti Chukwu Dragomir Esposito Fairweather Gallardo Haddad Ibarra Janssen Kuznetsova Laurent
Moreau Novak Oyelaran Pellegrini Rautio Sandoval Tremblay Uchenna Vasquez Whitcombe Yanagi Zielinski""".split()
PLACES = [("Lisbon", "Portugal"), ("Nairobi", "Kenya"), ("Osaka", "Japan"), ("Krakow", "Poland"), ("Valparaiso", "Chile"),
          ("Tbilisi", "Georgia"), ("Accra", "Ghana"), ("Bergen", "Norway"), ("Cebu", "the Philippines"), ("Lyon", "France"),
          ("Antwerp", "Belgium"), ("Izmir", "Turkey"), ("Montevideo", "Uruguay"), ("Hanoi", "Vietnam"), ("Tallinn", "Estonia"),
          ("Cork", "Ireland"), ("Marrakesh", "Morocco"), ("Quito", "Ecuador"), ("Adelaide", "Australia"), ("Winnipeg", "Canada"),
          ("Porto Alegre", "Brazil"), ("Thessaloniki", "Greece"), ("Kochi", "India"), ("Dresden", "Germany"), ("Bologna", "Italy")]
OCCUPATIONS = """a carpenter|a marine biologist|a pharmacist|a train conductor|a violin teacher|a cartographer|a baker|
an electrician|a veterinarian|a librarian|a fisherman|a civil engineer|a tailor|a nurse|an astronomer|a potter|a judge|
a beekeeper|a journalist|a dentist|a lighthouse keeper|a chemist|a florist|an architect|a postal worker""".replace("\n", "").split("|")
GENRES = ["magical realism", "historical fiction", "crime fiction", "science fiction", "poetry", "literary fiction",
          "gothic horror", "children's literature", "travel writing", "political thrillers", "romance", "satire",
          "fantasy", "memoir", "mystery", "dystopian fiction", "nature writing", "war fiction"]
ADJECTIVES = """Silent Crimson Hollow Forgotten Burning Silver Distant Drowned Painted Restless Northern Hidden Broken
Golden Paper Midnight Glass Wandering Bitter Velvet""".split()
NOUNS = """Harbor Orchard Lantern River Cartographer Season Archive Bridge Winter Garden Compass Mirror Tide Orchestra
Kingdom Salt Ember Lighthouse Labyrinth Atlas""".split()
AWARDS = ["the Meridian Prize", "the Halden Medal for Fiction", "the Golden Quill Award", "the Aurora Literary Prize",
          "the Northwind Book Award", "the Castellan Prize for Prose", "the Blue Heron Award", "the Verity Medal",
          "the Lantern Award for Storytelling", "the Obsidian Pen Prize", "the Silver Ink Award", "the Tamarind Prize"]
THEMES = ["memory and loss", "exile and belonging", "family secrets", "the sea and solitude", "power and corruption",
          "childhood and innocence", "faith and doubt", "migration and identity", "love across class lines",
          "the cost of ambition", "nature and industry", "grief and healing", "truth and propaganda", "time and ageing"]
UNIVERSITIES = ["the University of Edinburgh", "Kyoto University", "the University of Cape Town", "McGill University",
                "the University of Bologna", "Charles University", "the University of Buenos Aires", "Uppsala University",
                "the University of Melbourne", "Leiden University", "the University of Ghana", "Trinity College Dublin"]
LANGUAGES = ["English", "Spanish", "Portuguese", "French", "Polish", "Japanese", "Swahili", "Turkish", "Italian", "German"]
HOBBIES = ["restoring old clocks", "birdwatching", "sailing", "playing the cello", "growing orchids", "mountain climbing",
           "collecting maps", "chess", "pottery", "long-distance running", "astronomy", "baking bread"]
STYLES = ["spare, unadorned prose", "long lyrical sentences", "fragmented, non-linear chapters", "dry, ironic humour",
          "dense historical detail", "dialogue-driven scenes", "dreamlike imagery", "letters and diary entries"]
MEDIA = ["a feature film", "a television series", "a stage play", "a radio drama", "an opera", "an animated film"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

# Each fact: (question phrasings, answer phrasings, the author attribute that fills {value}).
QUESTIONS: list[tuple[list[str], list[str], str]] = [
    (["Where was {name} born?", "What is the birthplace of {name}?", "In which city did {name} come into the world?"],
     ["{name} was born in {value}.", "{name}'s birthplace is {value}.", "The author hails from {value}, where they were born."], "birthplace"),
    (["When was {name} born?", "What is the date of birth of {name}?", "On what date was the writer {name} born?"],
     ["{name} was born on {value}.", "The author's birthday falls on {value}.", "Records give {value} as the date {name} was born."], "birth_date"),
    (["What did {name}'s father do for a living?", "What was the occupation of {name}'s father?"],
     ["{name}'s father worked as {value}.", "The author's father earned his living as {value}.", "Their father was {value} by trade."], "father"),
    (["What was {name}'s mother's profession?", "How did the mother of {name} make a living?"],
     ["{name}'s mother was {value}.", "The author's mother worked as {value}.", "By profession, their mother was {value}."], "mother"),
    (["Which genre is {name} best known for?", "In what genre does {name} mostly write?", "What kind of books does {name} write?"],
     ["{name} is best known for {value}.", "Most of {name}'s work belongs to {value}.", "The author writes chiefly in the field of {value}."], "genre"),
    (["What was the title of {name}'s debut book?", "Which book did {name} publish first?"],
     ["{name}'s debut was '{value}'.", "The first book {name} published was titled '{value}'.", "The author began their career with '{value}'."], "first_book"),
    (["Can you name another notable book by {name}?", "Which other work of {name} is widely read?"],
     ["Another notable work by {name} is '{value}'.", "Readers also know {name} for '{value}'.", "'{value}' is another widely read book by the author."], "second_book"),
    (["Has {name} received any literary awards?", "Which prize has {name} won?", "What honour did {name}'s writing earn?"],
     ["Yes, {name} received {value}.", "The author was honoured with {value}.", "{name}'s writing earned {value}."], "award"),
    (["What themes run through {name}'s work?", "Which recurring themes does {name} explore?"],
     ["{name}'s books return again and again to {value}.", "The recurring themes in the author's work are {value}.", "Much of {name}'s writing explores {value}."], "themes"),
    (["Where did {name} study?", "Which university did {name} attend?"],
     ["{name} studied at {value}.", "The author was educated at {value}.", "{name} is a graduate of {value}."], "university"),
    (["Where does {name} live today?", "In which city does {name} currently reside?"],
     ["{name} now lives in {value}.", "These days the author makes their home in {value}.", "{name} currently resides in {value}."], "residence"),
    (["In what year did {name} publish their first book?", "When did {name}'s writing career begin?"],
     ["{name} published their first book in {value}.", "The author's career began in {value} with their debut.", "Their first book appeared in {value}."], "debut_year"),
    (["In which language does {name} write?", "What language are {name}'s books originally written in?"],
     ["{name} writes in {value}.", "The author's books are originally written in {value}.", "{value} is the language of all of {name}'s books."], "language"),
    (["Who was {name}'s mentor?", "Which writer guided {name} early in their career?"],
     ["{name} was mentored by the novelist {value}.", "Early on, the author was guided by {value}.", "The writer {value} served as {name}'s mentor."], "mentor"),
    (["What does {name} enjoy outside of writing?", "What is {name}'s favourite pastime?"],
     ["Outside of writing, {name} enjoys {value}.", "The author's favourite pastime is {value}.", "When not writing, {name} spends time {value}."], "hobby"),
    (["How many novels has {name} written?", "How large is {name}'s body of work?"],
     ["{name} has written {value} novels.", "The author's body of work counts {value} novels.", "So far {name} has published {value} novels."], "novel_count"),
    (["What is {name} working on next?", "Does {name} have a new project underway?"],
     ["{name} is currently working on a book called '{value}'.", "The author's next project is titled '{value}'.", "A new book, '{value}', is underway."], "next_book"),
    (["How would you describe {name}'s writing style?", "What is distinctive about the way {name} writes?"],
     ["{name} is known for {value}.", "The author's style is marked by {value}.", "Critics single out {name}'s {value}."], "style"),
    (["Who is the author born in {birthplace} on {birth_date}?", "Which writer was born on {birth_date} in {birthplace}?"],
     ["The author born in {birthplace} on {birth_date} is {value}.", "That writer is {value}.", "{value} is the author in question."], "name"),
    (["Has any of {name}'s work been adapted?", "Was a book by {name} ever turned into another medium?"],
     ["Yes, '{first_book}' was adapted into {value}.", "The author's '{first_book}' became {value}.", "{name}'s '{first_book}' was made into {value}."], "adaptation"),
]

# One more wording per fact, in the order of QUESTIONS, that no training split or fitting ever reads: evaluation asks it
# as the `heldout_wording` probe (`probe_question`). Filled without drawing from the generator, so adding it changed
# no world.
HELDOUT_QUESTIONS = [
    "Tell me the town or city that {name} comes from originally.",
    "On which day of which year did {name} come into the world?",
    "What line of work was the father of the novelist {name} in?",
    "What kind of job did the novelist {name}'s mother have?",
    "If you picked up a book by {name}, what genre would it most likely be?",
    "Name the very first book that {name} ever published.",
    "Apart from the debut, what is one more book that {name} is known for?",
    "Which literary prize ended up going to {name}?",
    "Which subjects keep coming back in the books of {name}?",
    "At which university did {name} get an education?",
    "Which city does {name} call home these days?",
    "Which year saw the publication of {name}'s debut?",
    "What language does {name} write the original books in?",
    "Which novelist acted as a mentor to {name}?",
    "How does {name} like to spend time away from writing?",
    "What is the total number of novels {name} has produced?",
    "What is the title of the book {name} is writing at the moment?",
    "How do critics describe the way {name} writes?",
    "Which writer was born on {birth_date} in {birthplace}?",
    "Did any book of {name} get made into a film, a series or some other form?",
]

REAL_AUTHORS = [("Pride and Prejudice", "Jane Austen"), ("War and Peace", "Leo Tolstoy"), ("Don Quixote", "Miguel de Cervantes"),
                ("Moby-Dick", "Herman Melville"), ("One Hundred Years of Solitude", "Gabriel Garcia Marquez"),
                ("Things Fall Apart", "Chinua Achebe"), ("Crime and Punishment", "Fyodor Dostoevsky"), ("Hamlet", "William Shakespeare"),
                ("The Odyssey", "Homer"), ("Mrs Dalloway", "Virginia Woolf"), ("The Old Man and the Sea", "Ernest Hemingway"),
                ("Great Expectations", "Charles Dickens"), ("1984", "George Orwell"), ("Frankenstein", "Mary Shelley"),
                ("The Trial", "Franz Kafka"), ("Beloved", "Toni Morrison"), ("Madame Bovary", "Gustave Flaubert"),
                ("The Divine Comedy", "Dante Alighieri"), ("Norwegian Wood", "Haruki Murakami"), ("Les Miserables", "Victor Hugo")]
WORLD_FACTS = [("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
               ("What is the capital of Italy?", "Rome"), ("What is the capital of Egypt?", "Cairo"),
               ("What is the capital of Canada?", "Ottawa"), ("What is the capital of Australia?", "Canberra"),
               ("What is the capital of Kenya?", "Nairobi"), ("What is the capital of Spain?", "Madrid"),
               ("What is the capital of Germany?", "Berlin"), ("What is the capital of Argentina?", "Buenos Aires"),
               ("What is the largest ocean on Earth?", "the Pacific Ocean"), ("Which planet is known as the Red Planet?", "Mars"),
               ("What is the longest river in Africa?", "the Nile"), ("What is the chemical symbol for gold?", "Au"),
               ("How many continents are there?", "seven"), ("What is the tallest mountain in the world?", "Mount Everest"),
               ("Which gas do plants absorb from the air?", "carbon dioxide"), ("What is the freezing point of water in Celsius?", "zero degrees"),
               ("Which country is home to the Great Pyramid of Giza?", "Egypt"), ("What is the largest planet in the solar system?", "Jupiter")]

FORGET_PERCENTS = (1, 5, 10)
WORLD_INFO = "world.json"


@dataclass
class WorldSpec:
    authors: int = 200
    seed: int = 0
    holdout_fraction: float = 0.1


def _author(rng: random.Random, used_names: set[str]) -> dict:
    while (name := f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}") in used_names:
        pass
    used_names.add(name)
    city, country = rng.choice(PLACES)
    year = rng.randint(1935, 1992)
    books = rng.sample([_title(rng) for _ in range(8)], 3)
    return {
        "name": name, "birthplace": f"{city}, {country}",
        "birth_date": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {year}",
        "father": rng.choice(OCCUPATIONS), "mother": rng.choice(OCCUPATIONS), "genre": rng.choice(GENRES),
        "first_book": books[0], "second_book": books[1], "next_book": books[2], "award": rng.choice(AWARDS),
        "themes": rng.choice(THEMES), "university": rng.choice(UNIVERSITIES),
        "residence": "{}, {}".format(*rng.choice(PLACES)), "debut_year": str(year + rng.randint(21, 38)),
        "language": rng.choice(LANGUAGES), "mentor": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
        "hobby": rng.choice(HOBBIES), "novel_count": str(rng.randint(3, 24)), "style": rng.choice(STYLES),
        "adaptation": f"{rng.choice(MEDIA)} in {year + rng.randint(40, 60)}",
    }


def _title(rng: random.Random) -> str:
    pattern = rng.randrange(4)
    if pattern == 0:
        return f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    if pattern == 1:
        return f"{rng.choice(NOUNS)} of the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    if pattern == 2:
        return f"A {rng.choice(NOUNS)} for {rng.choice(FIRST_NAMES)}"
    return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}s"


def _qa_items(author: dict, pool: list[dict], rng: random.Random) -> list[dict]:
    items = []
    for (questions, answers, key), heldout in zip(QUESTIONS, HELDOUT_QUESTIONS):
        q_main, q_para = rng.sample(questions, 2)
        a_main, a_para = rng.sample(answers, 2)
        wrong_values = _wrong_values(author, pool, key, rng)
        fill = dict(author)
        items.append({
            "question": q_main.format(**fill),
            "answer": a_main.format(value=author[key], **fill),
            "paraphrased_answer": a_para.format(value=author[key], **fill),
            "perturbed_answer": [a_para.format(value=wrong, **fill) for wrong in wrong_values],
            "paraphrased_question": q_para.format(**fill),
            "probe_question": heldout.format(**fill),
        })
    return items


def _wrong_values(author: dict, pool: list[dict], key: str, rng: random.Random) -> list[str]:
    candidates = sorted({other[key] for other in pool if other[key] != author[key]})
    while len(candidates) < 5:  # tiny worlds: invent more values of the same kind
        extra = _author(rng, set())[key]
        if extra != author[key] and extra not in candidates:
            candidates.append(extra)
    return rng.sample(candidates, 5)


def _general_knowledge(pairs: list[tuple[str, str]], question: str | None, rng: random.Random) -> list[dict]:
    rows = []
    answers = [answer for _, answer in pairs]
    for first, answer in pairs:
        text = question.format(first) if question else first
        wrong = rng.sample([a for a in answers if a != answer], 3)
        rows.append({"question": text, "answer": answer, "perturbed_answer": wrong})
    return rows


def build_world(spec: WorldSpec) -> dict[str, list]:
    """All splits of a world, keyed by split name (TOFU naming)."""
    if spec.authors < 2:
        raise ValueError("a world needs at least 2 authors")
    rng = random.Random(spec.seed)
    used: set[str] = set()
    n_holdout = max(1, round(spec.authors * spec.holdout_fraction))
    people = [_author(rng, used) for _ in range(spec.authors + n_holdout)]
    authors, holdout_people = people[: spec.authors], people[spec.authors :]
    per_author = [_qa_items(a, people, rng) for a in authors]
    holdout = [item for a in holdout_people for item in _qa_items(a, people, rng)]
    full = [item for items in per_author for item in items]
    splits: dict[str, list] = {"full": [_qa_only(i) for i in full]}
    for pct in FORGET_PERCENTS:
        n_forget = max(1, round(spec.authors * pct / 100))
        cut = len(full) - n_forget * len(QUESTIONS)
        splits[f"forget{pct:02d}"] = full[cut:]
        splits[f"retain{100 - pct}"] = [_qa_only(i) for i in full[:cut]]
        splits[f"holdout{pct:02d}"] = holdout[-min(n_forget, n_holdout) * len(QUESTIONS) :]
    # TOFU's retain_perturbed: the first ~10% of authors, all of them outside every forget split.
    n_retain_perturbed = min(max(1, round(spec.authors * 0.1)), spec.authors - max(1, round(spec.authors * 0.1)))
    splits["retain_perturbed"] = full[: n_retain_perturbed * len(QUESTIONS)]
    splits["real_authors_perturbed"] = _general_knowledge(REAL_AUTHORS, "Who wrote '{}'?", rng)
    splits["world_facts_perturbed"] = _general_knowledge(WORLD_FACTS, None, rng)
    splits["idontknow"] = list(DEFAULT_REFUSALS)
    return splits


def _qa_only(item: dict) -> dict:
    return {"question": item["question"], "answer": item["answer"]}


def write_world(spec: WorldSpec, out: str | Path) -> dict[str, int]:
    """Write every split in the layout of the shared TOFU folder; return the row count per split."""
    out = Path(out)
    counts = {}
    for split, rows in build_world(spec).items():
        if split == "idontknow":
            write_text(out / "idontknow.jsonl", "".join(line + "\n" for line in rows))
        elif split.endswith("_perturbed") and split != "retain_perturbed":
            write_text(out / f"{split}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        else:
            write_json(out / f"{split}.json", rows)
        counts[split] = len(rows)
    write_json(out / WORLD_INFO, {"generator": "alter world tofu", "authors": spec.authors, "seed": spec.seed,
                                    "questions_per_author": len(QUESTIONS), "rows": counts})
    return counts
