# Copyright 2026 The ECLIP for transformers authors. Licensed under the Apache License, Version 2.0.
"""Products of the offline demo catalogue: emoji from product-like subgroups of Unicode's ``emoji-test.txt``.

This module only deals with text: which emoji are products, their categories and their shop titles.
Titles never contain their category's words, so that zero-shot classification from a title measures
whether the model understands the image, not string matching between title and category prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMOJI_TEST_PATHS = (
    Path("/usr/share/unicode/emoji/emoji-test.txt"),  # Debian/Ubuntu package unicode-data
    Path("/usr/share/unicode-data/emoji/emoji-test.txt"),
)

# Unicode subgroup -> readable category. Only subgroups whose members are things a shop could sell;
# people, faces, animals, plants, flags, signs and symbols are left out entirely.
SUBGROUP_CATEGORIES: dict[str, str] = {
    "clothing": "clothing",
    "household": "household",
    "dishware": "kitchenware",
    "musical-instrument": "musical instrument",
    "phone": "phone",
    "computer": "computer",
    "tool": "tool",
    "office": "office",
    "sport": "sport",
    "game": "game",
    "food-fruit": "fruit",
    "food-vegetable": "vegetable",
    "food-prepared": "prepared food",
    "food-asian": "asian food",
    "food-sweet": "sweets",
    "drink": "drink",
    "transport-ground": "ground transport",
    "transport-water": "water transport",
    "transport-air": "air transport",
    "light & video": "light and video",
    "writing": "writing",
    "book-paper": "book and paper",
    "science": "science",
    "medical": "medical",
    "arts & crafts": "arts and crafts",
    "mail": "mail",
    "music": "music",
    "event": "event",
    "time": "time",
}

# Members of the subgroups above that are not products: signs, symbols, clock faces, card suits,
# infrastructure, weapons, and near-duplicates ("oncoming ..." views, mirrored glyphs).
EXCLUDED_NAMES = frozenset(
    {
        # household / computer / tool / office
        "elevator",
        "low battery",
        "bomb",
        "crossed swords",
        "dagger",
        "link",
        "chart increasing",
        "chart decreasing",
        "bar chart",
        # sport / game: flags, card suits
        "flag in hole",
        "spade suit",
        "heart suit",
        "diamond suit",
        "club suit",
        # phone
        "mobile phone with arrow",
        # ground / air transport: stations, roads, signs, duplicates
        "station",
        "bus stop",
        "motorway",
        "railway track",
        "oil drum",
        "fuel pump",
        "horizontal traffic light",
        "vertical traffic light",
        "stop sign",
        "construction",
        "oncoming bus",
        "oncoming police car",
        "oncoming taxi",
        "oncoming automobile",
        "airplane departure",
        "airplane arrival",
        "suspension railway",
        "mountain cableway",
        "aerial tramway",
        "flying saucer",
        # light & video: mirrored duplicate
        "magnifying glass tilted right",
        # science / medical: not goods
        "dna",
        "drop of blood",
        "x-ray",
        # arts & crafts
        "performing arts",
        # mail: symbols and duplicates
        "e-mail",
        "incoming envelope",
        "envelope with arrow",
        "closed mailbox with lowered flag",
        "open mailbox with raised flag",
        # music: notation symbols
        "musical score",
        "musical note",
        "musical notes",
        # event: symbols and ceremonies
        "sparkles",
        "moon viewing ceremony",
        "reminder ribbon",
        # time: clock faces are covered by the numeric pattern below; duplicate hourglass
        "hourglass not done",
    }
)
_CLOCK_FACE = re.compile(r"(o’clock|o'clock|-thirty)$")

# The shop name of a product where its Unicode name contains its category's words or reads badly.
NAME_OVERRIDES: dict[str, str] = {
    "woman’s clothes": "woman’s blouse",
    "kitchen knife": "chef knife",
    "musical keyboard": "piano keyboard",
    "mobile phone": "mobile handset",
    "telephone": "desk landline",
    "telephone receiver": "landline receiver",
    "desktop computer": "desktop PC",
    "computer mouse": "PC mouse",
    "computer disk": "minidisc",
    "toolbox": "metal storage chest",
    "video game": "console controller",
    "game die": "dice cube",
    "kiwi fruit": "kiwi",
    "canned food": "tin can",
    "pot of food": "stew pot",
    "shallow pan of food": "paella pan",
    "tropical drink": "tropical cocktail",
    "airplane": "jetliner",
    "small airplane": "propeller plane",
    "light bulb": "electric bulb",
    "flashlight": "torch",
    "video camera": "camcorder",
    "videocassette": "VHS cassette",
    "magnifying glass tilted left": "magnifying glass",
    "notebook with decorative cover": "decorated jotter",
    "closed book": "hardcover novel",
    "open book": "open novel",
    "green book": "green hardcover",
    "blue book": "blue hardcover",
    "orange book": "orange hardcover",
    "books": "stack of novels",
    "notebook": "exercise jotter",
    "newspaper": "gazette",
    "rolled-up newspaper": "rolled-up gazette",
    "bookmark tabs": "index tabs",
    "bookmark": "page marker",
    "artist palette": "paint palette",
    "closed mailbox with raised flag": "letterbox",
    "open mailbox with lowered flag": "open letterbox",
    "timer clock": "countdown clock",
    "hourglass done": "hourglass",
}

_STOPWORDS = frozenset({"a", "an", "and", "of", "the", "with", "for", "in", "by", "to"})

# Title ingredients. Brand-like words are invented; anything that collides with a category is filtered out.
BRANDS = (
    "Norvik", "Lumara", "Zentro", "Altavia", "Brisa", "Ferro", "Halden", "Mirabel", "Quillon", "Vantor",
    "Solenne", "Pavo", "Ridgeway", "Kiruna", "Okawa", "Marlo", "Everly", "Tamsin", "Orbeck", "Velda",
)  # fmt: skip
COLOURS = (
    "Black", "White", "Red", "Navy", "Olive Green", "Sky Blue", "Charcoal", "Beige", "Burgundy", "Mint",
    "Coral", "Mustard Yellow", "Silver", "Rose Gold", "Teal", "Ivory",
)  # fmt: skip
SIZES = ("Small", "Medium", "Large", "XL", "Mini", "Compact", "Set of 2", "Pack of 3", "Oversized", "Slim")
FOOD_ADJECTIVES = ("Organic", "Fresh", "Homemade Style", "Premium", "Farm", "Gourmet", "Classic", "Natural")
FOOD_SIZES = ("250 g", "500 g", "1 kg", "Family Pack", "Pack of 6", "Single", "Party Box", "Value Pack")
FOOD_CATEGORIES = frozenset({"fruit", "vegetable", "prepared food", "asian food", "sweets", "drink"})
GOODS_TEMPLATES = (
    "{brand} {name}",
    "{name} - {adj}, {size}",
    "New {brand} {name} ({adj})",
    "{adj} {name} by {brand}",
    "{brand} Premium {name}, {size}",
    "{name} | Free Shipping | {brand}",
    "Classic {name} in {adj}",
    "{size} {name} - Best Seller",
    "{brand} {name} {size} {adj}",
    "Genuine {brand} {name} - Top Rated",
)
FOOD_TEMPLATES = (
    "{brand} {name}",
    "{adj} {name} - {size}",
    "{brand} {adj} {name}, {size}",
    "{name} ({size}) | {brand}",
    "{adj} {name} by {brand}",
    "{name}, {size} - Best Seller",
    "New: {adj} {name} from {brand}",
    "{brand} {name} - {size} - Free Delivery",
)


@dataclass(frozen=True)
class EmojiProduct:
    """One product: an emoji (what is drawn) with its Unicode name, subgroup and readable category."""

    product_id: str
    emoji: str
    unicode_name: str
    subgroup: str
    category: str

    @property
    def shop_name(self) -> str:
        """Name used in titles: the Unicode name, or its override when that would leak the category."""
        return NAME_OVERRIDES.get(self.unicode_name, self.unicode_name)


def find_emoji_test() -> Path | None:
    """Path of Unicode's ``emoji-test.txt`` if installed, else ``None``."""
    return next((path for path in EMOJI_TEST_PATHS if path.is_file()), None)


def product_id_for(codepoints: list[int]) -> str:
    """Stable product id from code points, ignoring the emoji presentation selector (U+FE0F)."""
    return "emoji-" + "-".join(f"{cp:x}" for cp in codepoints if cp != 0xFE0F)


def is_product(name: str, subgroup: str) -> bool:
    """Whether an emoji of ``subgroup`` called ``name`` is a product (see the exclusion lists)."""
    return subgroup in SUBGROUP_CATEGORIES and name not in EXCLUDED_NAMES and not _CLOCK_FACE.search(name)


@dataclass(frozen=True)
class EmojiEntry:
    """One fully-qualified single-code-point emoji of ``emoji-test.txt`` (an optional U+FE0F aside)."""

    emoji: str
    code_point: int
    name: str
    group: str
    subgroup: str


def read_emoji_test(path: str | Path) -> list[EmojiEntry]:
    """Every fully-qualified single-code-point emoji of ``emoji-test.txt`` with its group and subgroup, in file
    order; skin-tone variants, ZWJ sequences, keycaps and flags are all multi-code-point and so left out."""
    entries: list[EmojiEntry] = []
    group = subgroup = ""
    line_re = re.compile(r"^([0-9A-F ]+?)\s*;\s*([a-z-]+)\s*#\s*\S+\s+E\d+\.\d+\s+(.+)$")
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        match = line_re.match(line)
        if not match or match.group(2) != "fully-qualified":
            continue
        codepoints = [int(cp, 16) for cp in match.group(1).split()]
        base = [cp for cp in codepoints if cp != 0xFE0F]
        if len(base) == 1:
            emoji = "".join(chr(cp) for cp in codepoints)
            entries.append(EmojiEntry(emoji, base[0], match.group(3).strip(), group, subgroup))
    return entries


def parse_emoji_test(path: str | Path) -> list[EmojiProduct]:
    """Product emoji from ``emoji-test.txt`` (see :func:`read_emoji_test`), in file order."""
    return [
        EmojiProduct(
            product_id=product_id_for([ord(ch) for ch in entry.emoji]),
            emoji=entry.emoji,
            unicode_name=entry.name,
            subgroup=entry.subgroup,
            category=SUBGROUP_CATEGORIES[entry.subgroup],
        )
        for entry in read_emoji_test(path)
        if is_product(entry.name, entry.subgroup)
    ]


def category_stems(category: str) -> set[str]:
    """Word stems of a category that a title must not contain (as a substring of any title word).

    ``"arts and crafts"`` -> ``{"art", "craft"}``; ``"clothing"`` -> ``{"cloth"}``;
    ``"musical instrument"`` -> ``{"music", "instrument"}``.
    """
    stems = set()
    for word in re.findall(r"[a-z]+", category.lower()):
        if word in _STOPWORDS:
            continue
        stems.add(word)
        if word.endswith("s") and len(word) > 3:
            stems.add(word[:-1])
        if word.endswith("ing") and len(word) > 6:
            stems.add(word[:-3])
        if word.endswith("al") and len(word) > 6:  # "musical" -> "music" also catches "musician"
            stems.add(word[:-2])
    # A stem that contains a shorter stem is redundant: substring matching already catches it.
    return {s for s in stems if not any(t != s and t in s for t in stems)}


def title_conflicts(title: str, category: str) -> list[str]:
    """Words of ``title`` that contain one of ``category``'s stems (empty when the title is clean)."""
    stems = category_stems(category)
    return [word for word in re.findall(r"[a-z]+", title.lower()) if any(stem in word for stem in stems)]


def _capitalise(name: str) -> str:
    """Shop-style capitalisation keeping acronyms: "meat on bone" -> "Meat on Bone", "woman’s" -> "Woman's"."""
    words = name.replace("’", "'").split(" ")
    return " ".join(
        word if i and word in _STOPWORDS | {"on"} else word[:1].upper() + word[1:] for i, word in enumerate(words)
    )


def _clean_choices(options: tuple[str, ...], category: str) -> list[str]:
    return [option for option in options if not title_conflicts(option, category)]


def make_title(product: EmojiProduct, rng: np.random.Generator) -> str:
    """A shop title for ``product``: its name in one of several templates with brand/colour/size words.

    Raises ``ValueError`` when even the bare name leaks the category (add a ``NAME_OVERRIDES`` entry).
    """
    name = _capitalise(product.shop_name)
    if title_conflicts(name, product.category):
        raise ValueError(f"{product.unicode_name!r}: name leaks category {product.category!r}; add an override")
    food = product.category in FOOD_CATEGORIES
    brands = _clean_choices(BRANDS, product.category)
    adjectives = _clean_choices(FOOD_ADJECTIVES if food else COLOURS, product.category)
    sizes = _clean_choices(FOOD_SIZES if food else SIZES, product.category)
    # Draw every ingredient unconditionally so the random stream does not depend on which template wins.
    pool = FOOD_TEMPLATES if food else GOODS_TEMPLATES
    templates = [pool[i] for i in rng.permutation(len(pool))]
    fill = {
        "name": name,
        "brand": brands[rng.integers(len(brands))],
        "adj": adjectives[rng.integers(len(adjectives))],
        "size": sizes[rng.integers(len(sizes))],
    }
    for template in templates:
        title = template.format(**fill)
        if not title_conflicts(title, product.category):
            return title
    return name
