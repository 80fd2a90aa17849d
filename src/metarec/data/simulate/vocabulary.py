"""The fixed vocabulary of the simulated store: its leaf categories (each with words, a price
and an age), and the pools that titles, descriptions, authors, publishers and brands draw from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _Leaf:
    path: str
    description: str
    noun: str  # what one item is called in a description
    words: tuple[str, ...]  # vocabulary that carries the category signal in titles
    price_median: float
    age_scale: float  # mean age in years of the catalogue


LEAVES: tuple[_Leaf, ...] = (
    _Leaf(
        "Books > Literature > Poetry",
        "Collections of verse, from sonnets to free verse and spoken word.",
        "poetry collection",
        ("Verses", "Sonnets", "Elegy", "Odes", "Stanzas", "Hymns", "Lyric", "Ballads", "Rhymes"),
        14.0,
        25.0,
    ),
    _Leaf(
        "Books > Literature > Classics",
        "Enduring novels and plays from the literary canon.",
        "classic novel",
        ("Pride", "Estate", "Duchess", "Voyage", "Heir", "Parish", "Manor", "Fortune", "Exile"),
        9.0,
        120.0,
    ),
    _Leaf(
        "Books > Literature > Literary Fiction",
        "Character-driven contemporary novels with an ear for language.",
        "literary novel",
        ("Memory", "Daughters", "Kitchen", "Grief", "Lives", "Season", "Distance", "Hours"),
        16.0,
        12.0,
    ),
    _Leaf(
        "Books > Fiction > Mystery",
        "Whodunits and detective stories built around a puzzle.",
        "mystery novel",
        ("Murder", "Detective", "Alibi", "Clue", "Inspector", "Vicarage", "Poison", "Case"),
        12.0,
        20.0,
    ),
    _Leaf(
        "Books > Fiction > Thriller",
        "Fast-paced suspense: spies, conspiracies and chases against the clock.",
        "thriller",
        ("Agent", "Target", "Conspiracy", "Protocol", "Hunt", "Cipher", "Pursuit", "Dossier"),
        13.0,
        10.0,
    ),
    _Leaf(
        "Books > Fiction > Science Fiction",
        "Stories of future worlds, space travel and technology.",
        "science fiction novel",
        ("Starship", "Android", "Orbit", "Colony", "Quantum", "Galaxy", "Signal", "Nebula"),
        14.0,
        18.0,
    ),
    _Leaf(
        "Books > Fiction > Fantasy",
        "Epic quests, magic systems and invented kingdoms.",
        "fantasy novel",
        ("Dragon", "Sword", "Kingdom", "Sorcerer", "Throne", "Realm", "Prophecy", "Runes"),
        15.0,
        15.0,
    ),
    _Leaf(
        "Books > Fiction > Romance",
        "Love stories, from regency courtships to modern meet-cutes.",
        "romance novel",
        ("Love", "Heart", "Kiss", "Wedding", "Bride", "Desire", "Sweetheart", "Promise"),
        10.0,
        8.0,
    ),
    _Leaf(
        "Books > Comics > Graphic Novels",
        "Book-length comics for adult readers, fiction and memoir.",
        "graphic novel",
        ("Panels", "Ink", "Heroes", "Vigilante", "Mask", "Saga", "Issue", "Sketch"),
        20.0,
        10.0,
    ),
    _Leaf(
        "Books > Comics > Manga",
        "Japanese comics across action, drama and slice-of-life.",
        "manga volume",
        ("Ninja", "Academy", "Titan", "Spirit", "Samurai", "Festival", "Mecha", "Club"),
        11.0,
        8.0,
    ),
    _Leaf(
        "Books > Children > Picture Books",
        "Illustrated stories to read aloud to young children.",
        "picture book",
        ("Bunny", "Bedtime", "Bear", "Puppy", "Moon", "Teddy", "Duckling", "Giggles"),
        8.0,
        15.0,
    ),
    _Leaf(
        "Books > Children > Young Adult",
        "Coming-of-age fiction for teenage readers.",
        "young adult novel",
        ("Senior", "Rebels", "Summer", "Secret", "Crush", "Academy", "Rival", "Prom"),
        12.0,
        8.0,
    ),
    _Leaf(
        "Books > Non-fiction > History",
        "Narrative and scholarly history from antiquity to the twentieth century.",
        "history book",
        ("Empire", "Revolution", "War", "Dynasty", "Republic", "Century", "Siege", "Ancient"),
        22.0,
        20.0,
    ),
    _Leaf(
        "Books > Non-fiction > Biography",
        "Lives of artists, leaders and scientists, told by others or themselves.",
        "biography",
        ("Life", "Portrait", "Memoir", "Years", "Legacy", "Genius", "Founder", "Letters"),
        18.0,
        15.0,
    ),
    _Leaf(
        "Books > Non-fiction > Popular Science",
        "Accessible books on physics, biology and the mind.",
        "popular science book",
        ("Universe", "Genes", "Brain", "Atoms", "Evolution", "Cosmos", "Climate", "Cells"),
        19.0,
        12.0,
    ),
    _Leaf(
        "Books > Non-fiction > Philosophy",
        "Introductions and classic texts on ethics, logic and meaning.",
        "philosophy book",
        ("Ethics", "Reason", "Virtue", "Truth", "Being", "Mind", "Freedom", "Logic"),
        17.0,
        60.0,
    ),
    _Leaf(
        "Books > Lifestyle > Cookbooks",
        "Recipes and techniques for home cooks and bakers.",
        "cookbook",
        ("Recipes", "Baking", "Kitchen", "Feasts", "Spices", "Bread", "Vegan", "Suppers"),
        25.0,
        8.0,
    ),
    _Leaf(
        "Books > Lifestyle > Travel",
        "Guidebooks and travel writing for journeys near and far.",
        "travel guide",
        ("Roads", "Islands", "Guide", "Coast", "Trails", "Cities", "Passport", "Mountains"),
        20.0,
        6.0,
    ),
    _Leaf(
        "Music > Vinyl",
        "Records on vinyl, new pressings and reissues across genres.",
        "vinyl record",
        ("Groove", "Sessions", "Live", "Jazz", "Soul", "Remastered", "Blues", "Echoes"),
        28.0,
        6.0,
    ),
    _Leaf(
        "Electronics > E-readers",
        "E-ink readers and their covers, lights and accessories.",
        "e-reader accessory",
        ("Reader", "Glow", "Cover", "Paper", "Backlight", "Sleeve", "Touch", "Pocket"),
        60.0,
        3.0,
    ),
    _Leaf(
        "Toys > Board Games",
        "Strategy, party and family board games.",
        "board game",
        ("Strategy", "Dice", "Quest", "Cards", "Tiles", "Castle", "Party", "Trade"),
        35.0,
        5.0,
    ),
    _Leaf(
        "Stationery > Notebooks",
        "Notebooks, journals and planners for writing by hand.",
        "notebook",
        ("Journal", "Dotted", "Planner", "Sketchbook", "Linen", "Ruled", "Pocket", "Leather"),
        15.0,
        3.0,
    ),
)

_GENERIC = (
    "Light", "River", "House", "Night", "Road", "Garden", "Winter", "Stone", "Journey",
    "Silence", "Fire", "Window", "Letter", "Island", "Storm", "Door", "Glass", "Field",
    "Shadow", "Morning", "Salt", "Bridge", "Tide", "Forest",
)  # fmt: skip
_ADJECTIVES = (
    "gripping", "thoughtful", "funny", "moving", "practical", "ambitious", "quiet", "bold",
    "accessible", "beautiful", "surprising", "classic", "new", "acclaimed", "charming",
)  # fmt: skip
_FIRST = (
    "Ada", "Ben", "Clara", "Dev", "Elena", "Felix", "Grace", "Hiro", "Ines", "Jonas", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera",
    "Wen", "Xavier", "Yara", "Zane", "Amara", "Bruno", "Chloe", "Dario", "Esme", "Farid",
)  # fmt: skip
_LAST = (
    "Abbott", "Bauer", "Castro", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quist", "Rossi",
    "Silva", "Tanaka", "Umeh", "Varga", "Weber", "Xu", "Yilmaz", "Zhang", "Adeyemi", "Berg",
    "Costa", "Dlamini", "Evans", "Ferreira", "Gupta", "Horvat", "Ivanova", "Jovanovic", "Kim",
    "Lopez", "Muller", "Novak", "Olsen", "Park", "Quinlan", "Reyes", "Sato", "Torres", "Ueda",
    "Vogel", "Walsh", "Young",
)  # fmt: skip
_PUBLISHER_HEADS = (
    "Harbor", "Lantern", "Quill", "Meridian", "Northgate", "Blue Heron", "Redwood", "Ashford",
    "Orchard", "Kestrel", "Saltmarsh", "Beacon", "Foxglove", "Granite", "Hollow Oak", "Juniper",
    "Larkspur", "Millbrook", "Copper Kettle", "Wayfarer",
)  # fmt: skip
_PUBLISHER_TAILS = ("Press", "Books", "House", "Publishing", "Editions")
_SYLLABLES = (
    "lu", "ma", "ko", "ri", "ve", "no", "ta", "zen", "qui", "ar", "bo", "el", "sa", "fi", "du",
    "po", "mi", "ga", "xo", "ny",
)  # fmt: skip
_N_BOOK_SUBDOMAINS = len(
    {leaf.path.split(" > ")[1] for leaf in LEAVES if leaf.path.startswith("Books")}
)
