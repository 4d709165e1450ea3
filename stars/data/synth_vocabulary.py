"""The words the synthetic catalogue is built from.

Items in one subclass share nouns and descriptor words, items with one
attribute share its surface form, and holiday items share their holiday's
theme words: so text similarity carries the same structure as the behaviour
the generator plants (see :mod:`stars.data.synth`).  Attribute surface forms
are the ones the default tag vocabulary recognises.
"""

# category -> subclass -> (product nouns, descriptor words used in descriptions)
TAXONOMY = {
    "Grocery": {
        "tea": (["green tea", "black tea", "herbal tea", "matcha powder", "chai tea"],
                ["loose leaf", "steep", "antioxidant", "brewed"]),
        "coffee": (["coffee beans", "ground coffee", "espresso pods", "cold brew concentrate"],
                   ["roast", "arabica", "caffeine", "brew"]),
        "snacks": (["granola bars", "trail mix", "potato chips", "dark chocolate"],
                   ["crunchy", "snack", "sweet", "salty"]),
        "baking": (["almond flour", "pancake mix", "vanilla extract", "cake sprinkles"],
                   ["bake", "recipe", "oven", "dough"]),
    },
    "Beauty": {
        "skincare": (["face serum", "night cream", "facial cleanser", "moisturizer"],
                     ["skin", "hydrating", "vitamin c", "glow"]),
        "haircare": (["shampoo", "conditioner", "hair oil", "hair mask"],
                     ["hair", "scalp", "shine", "curls"]),
        "makeup": (["lipstick", "mascara", "foundation", "eyeshadow palette"],
                   ["color", "shade", "lashes", "matte"]),
        "bodycare": (["body lotion", "body wash", "hand cream", "lip balm"],
                     ["body", "smooth", "shea butter", "nourishing"]),
    },
    "Electronics": {
        "audio": (["earbuds", "headphones", "portable speaker", "soundbar"],
                  ["sound", "bass", "noise cancelling", "audio"]),
        "phone_accessories": (["phone case", "usb c charger", "charging cable", "screen protector"],
                              ["phone", "fast charging", "protection", "slim"]),
        "smart_home": (["smart plug", "smart bulb", "video doorbell", "thermostat"],
                       ["app", "voice control", "automation", "home"]),
        "computing": (["computer mouse", "mechanical keyboard", "usb hub", "laptop stand"],
                      ["desk", "typing", "ergonomic", "laptop"]),
    },
    "Home": {
        "kitchen": (["chef knife", "frying pan", "cutting board", "dutch oven"],
                    ["cook", "kitchen", "stainless", "nonstick"]),
        "decor": (["scented candle", "ceramic vase", "throw pillow", "wall art"],
                  ["room", "decor", "cozy", "accent"]),
        "bedding": (["duvet cover", "pillowcase set", "weighted blanket", "mattress topper"],
                    ["sleep", "soft", "cotton", "bed"]),
        "bath": (["bath towel set", "shower curtain", "bath mat", "soap dispenser"],
                 ["bathroom", "absorbent", "spa", "plush"]),
    },
    "Sports": {
        "yoga": (["yoga mat", "yoga block", "resistance bands", "foam roller"],
                 ["stretch", "grip", "studio", "flexibility"]),
        "running": (["running shoes", "running socks", "water bottle", "running belt"],
                    ["run", "marathon", "breathable", "pace"]),
        "camping": (["camping tent", "sleeping bag", "camp lantern", "hiking backpack"],
                    ["outdoor", "trail", "hiking", "campsite"]),
        "cycling": (["bike helmet", "bike light", "cycling gloves", "bike lock"],
                    ["ride", "bike", "road", "commute"]),
    },
    "Toys": {
        "puzzles": (["jigsaw puzzle", "brain teaser", "puzzle box", "floor puzzle"],
                    ["pieces", "challenge", "solve", "picture"]),
        "building": (["building blocks", "construction set", "magnetic tiles", "marble run"],
                     ["build", "creative", "stem", "bricks"]),
        "plush": (["teddy bear", "plush unicorn", "stuffed dinosaur", "plush bunny"],
                  ["cuddly", "stuffed", "hug", "fluffy"]),
        "games": (["board game", "card game", "dice game", "trivia game"],
                  ["players", "strategy", "party", "game night"]),
    },
    "Pets": {
        "dog": (["dog food", "dog chew toy", "dog leash", "dog bed"],
                ["dog", "puppy", "walk", "chew"]),
        "cat": (["cat litter", "cat scratching post", "cat treats", "cat toy"],
                ["cat", "kitten", "scratch", "feline"]),
        "aquarium": (["fish food", "aquarium filter", "aquarium heater", "aquarium gravel"],
                     ["fish", "tank", "water", "reef"]),
        "bird": (["bird seed", "bird cage", "bird feeder", "bird perch"],
                 ["bird", "parrot", "seed", "feather"]),
    },
}

# category -> attribute tags its items may carry (names from the default vocabulary)
ATTRIBUTES = {
    "Grocery": ["organic", "vegan", "gluten_free", "sugar_free", "non_gmo", "dairy_free",
                "value_pack"],
    "Beauty": ["cruelty_free", "fragrance_free", "paraben_free", "sulfate_free", "vegan",
               "organic", "hypoallergenic", "travel_size", "long_lasting"],
    "Electronics": ["wireless", "waterproof", "rechargeable", "premium", "kids"],
    "Home": ["handmade", "eco_friendly", "premium", "gift_set", "hypoallergenic"],
    "Sports": ["waterproof", "eco_friendly", "women", "men", "kids"],
    "Toys": ["eco_friendly", "handmade", "baby", "gift_set", "value_pack"],
    "Pets": ["organic", "eco_friendly", "value_pack", "waterproof", "premium"],
}

# attribute tag -> how it is written in titles
SURFACE = {
    "organic": "Organic", "vegan": "Vegan", "gluten_free": "Gluten-Free",
    "sugar_free": "Sugar-Free", "non_gmo": "Non-GMO", "dairy_free": "Dairy-Free",
    "value_pack": "Value Pack", "cruelty_free": "Cruelty-Free",
    "fragrance_free": "Fragrance-Free", "paraben_free": "Paraben-Free",
    "sulfate_free": "Sulfate-Free", "hypoallergenic": "Hypoallergenic",
    "travel_size": "Travel Size", "long_lasting": "Long Lasting", "wireless": "Wireless",
    "waterproof": "Waterproof", "rechargeable": "Rechargeable", "premium": "Premium",
    "kids": "Kids", "handmade": "Handmade", "eco_friendly": "Eco-Friendly",
    "gift_set": "Gift Set", "women": "for Women", "men": "for Men", "baby": "Baby",
}

BRANDS = {
    "Grocery": ["Leafy", "Harvest Table", "Golden Mill", "Bean Co", "Nutri", "Sunfield"],
    "Beauty": ["Lumina", "Petal", "Aurea", "Skinwise", "Velvet", "Nordic Dew"],
    "Electronics": ["Soundz", "Voltix", "Nexa", "Pixelon", "Ampere", "Kite"],
    "Home": ["Hearth", "Oak & Ash", "Linenly", "Casa", "Nest", "Stonebridge"],
    "Sports": ["Stride", "Summit", "Flexa", "Trailhead", "Velo", "Peak"],
    "Toys": ["Tinker", "Brickly", "Cuddle Co", "Playwise", "Marble", "Kiddo"],
    "Pets": ["Pawsome", "Whisker", "Aqua Life", "Tailwag", "Feather & Co", "Furrend"],
}

VARIANTS = {
    "Grocery": ["8 oz", "12 oz", "16 oz", "20 count", "32 oz"],
    "Beauty": ["1 fl oz", "2 fl oz", "50 ml", "100 ml", "250 ml"],
    "Electronics": ["Gen 2", "Pro", "Lite", "Max", "X1", "2024 Edition"],
    "Home": ["Large", "Small", "Set of 2", "Queen", "King"],
    "Sports": ["Size M", "Size L", "1 L", "One Size", "Size S"],
    "Toys": ["500 pieces", "1000 pieces", "Ages 3+", "Ages 8+", "Mini"],
    "Pets": ["5 lb", "15 lb", "Small", "Large", "Medium"],
}

COLOURS = ["Black", "White", "Blue", "Sage", "Red", "Grey", "Navy", "Rose", "Charcoal", "Ivory"]

# holiday -> (month, day in the generated year, theme words for titles and descriptions)
HOLIDAYS = {
    "halloween": ((10, 31), ["Halloween", "Spooky", "Pumpkin"]),
    "thanksgiving": ((11, 23), ["Thanksgiving", "Harvest", "Autumn"]),
    "christmas": ((12, 25), ["Christmas", "Festive", "Snowflake"]),
}

# category preference multipliers by age band: young shoppers lean to electronics,
# beauty and sports; middle-aged to home, toys and pets; older to grocery and home
AGE_BANDS = ((18, 30), (30, 50), (50, 80))
AGE_CATEGORY_BIAS = {
    0: {"Electronics": 3.0, "Beauty": 2.5, "Sports": 2.0},
    1: {"Home": 2.5, "Toys": 3.0, "Pets": 2.0},
    2: {"Grocery": 3.0, "Home": 2.0, "Pets": 1.5},
}

REGIONS = ("us", "eu", "uk", "ca")
REGION_WEIGHTS = (0.45, 0.25, 0.15, 0.15)
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me")
DEVICES = ("mobile", "desktop", "tablet")
