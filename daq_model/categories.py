"""Category names of the datasets the released DVIS-DAQ models were trained on.

Contiguous label ``i`` (the model's class index) is dataset category id ``i + 1`` for all three.
"""

from __future__ import annotations

YTVIS_2019_CATEGORIES: tuple[str, ...] = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake",
    "monkey", "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear",
    "motorbike", "giraffe", "leopard", "fox", "deer", "owl", "surfboard", "airplane", "truck",
    "zebra", "tiger", "elephant", "snowboard", "boat", "shark", "mouse", "frog", "eagle",
    "earless_seal", "tennis_racket",
)

YTVIS_2021_CATEGORIES: tuple[str, ...] = (
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck", "earless_seal",
    "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda", "giraffe", "horse", "leopard",
    "lizard", "monkey", "motorbike", "mouse", "parrot", "person", "rabbit", "shark", "skateboard",
    "snake", "snowboard", "squirrel", "surfboard", "tennis_racket", "tiger", "train", "truck",
    "turtle", "whale", "zebra",
)

# Spelling ("Vehical") as in the OVIS annotation files.
OVIS_CATEGORIES: tuple[str, ...] = (
    "Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra",
    "Giraffe", "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger", "Fish",
    "Turtle", "Bicycle", "Motorcycle", "Airplane", "Boat", "Vehical",
)
