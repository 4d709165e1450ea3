"""A small hand-written dataset in the data contract, for fast unit tests; helpers the
tests share."""
import csv
import dataclasses
import os
import shutil
import socket
from pathlib import Path

DAY = 86400
T0 = 1_700_000_000  # 2023-11-14

ITEMS = [
    # item_id, title, description, brand, category_path, subclass, price, stock, regions, tags,
    ("i1", "Organic Green Tea 20 bags", "Gluten-free loose leaf tea", "Leafy", "Grocery > Tea",
     "grocery/tea", "4.5", "10", "us|eu", ""),
    ("i2", "Vegan Chai Tea Blend", "Spiced black tea", "Leafy", "Grocery > Tea",
     "grocery/tea", "5.0", "0", "us", "vegan"),
    ("i3", "Earl Grey Tea Tin", "Classic bergamot tea", "Royal", "Grocery > Tea",
     "grocery/tea", "7.25", "3", "", ""),
    ("i4", "Dark Roast Coffee Beans", "Whole bean coffee", "Bean Co", "Grocery > Coffee",
     "grocery/coffee", "12", "5", "us|eu", ""),
    ("i5", "Decaf Coffee Pods", "", "Bean Co", "Grocery > Coffee",
     "grocery/coffee", "", "", "eu", ""),
    ("i6", "Wireless Earbuds", "Waterproof wireless earbuds", "Soundz", "Electronics > Audio",
     "electronics/audio", "59.9", "8", "us|eu|uk", ""),
    ("i7", "Bluetooth Speaker", "Portable waterproof speaker", "Soundz", "Electronics > Audio",
     "electronics/audio", "35", "2", "us", ""),
    ("i8", "Christmas Cookie Gift Set", "Holiday cookies", "Bakery", "Grocery > Snacks",
     "grocery/snacks", "15", "20", "us", ""),
    ("i9", "Cold Start Matcha Powder", "Organic matcha green tea", "Leafy", "Grocery > Tea",
     "grocery/tea", "18", "4", "us", "organic"),
]

EVENTS = [
    # user, item, day offset, event, session, page
    ("u1", "i1", 0, "view", "s1", "p1"), ("u1", "i2", 0, "view", "s1", "p1"),
    ("u1", "i2", 0, "add_to_cart", "s1", "p1"), ("u1", "i2", 0, "purchase", "s1", "p1"),
    ("u1", "i3", 5, "view", "s2", "p2"), ("u1", "i1", 40, "view", "s3", "p5"),
    ("u2", "i4", 1, "view", "s4", "p3"), ("u2", "i5", 1, "view", "s4", "p3"),
    ("u2", "i5", 2, "purchase", "s5", ""), ("u2", "i4", 41, "view", "s6", ""),
    ("u3", "i6", 3, "view", "s7", "p4"), ("u3", "i7", 3, "view", "s7", "p4"),
    ("u3", "i6", 4, "add_to_cart", "s8", ""), ("u3", "i7", 42, "view", "s9", ""),
    ("u4", "i8", 6, "view", "s10", ""), ("u4", "i1", 7, "view", "s11", ""),
    ("u4", "i3", 43, "purchase", "s12", ""),
    ("u5", "i6", 8, "view", "s13", ""), ("u5", "zzz-unknown", 9, "view", "s13", ""),
    ("u5", "i7", 10, "view", "s14", ""), ("u5", "i6", 44, "purchase", "s15", ""),
]

IMPRESSIONS = [("p1", "i1|i2|i3"), ("p2", "i3|i1|i9"), ("p3", "i4|i5"),
               ("p4", "i6|i7"), ("p5", "i1|i2"), ("p9", "i1|nope")]

USERS = [("u1", "34", "120", "gmail.com", "us"), ("u2", "51", "", "yahoo.com", "eu"),
         ("u3", "", "15", "gmail.com", "us"), ("u4", "22", "700", "", "uk"),
         ("u5", "45", "30", "proton.me", "us")]


def _write(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_small_dataset(directory) -> Path:
    """Writes items/interactions/impressions/users CSVs; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / "items.csv", ["item_id", "title", "description", "brand", "category_path",
                                     "subclass", "price", "stock", "regions", "tags"], ITEMS)
    _write(directory / "interactions.csv",
           ["user_id", "item_id", "timestamp", "event_type", "session_id", "page_id"],
           [(u, i, T0 + d * DAY + n, e, s, p) for n, (u, i, d, e, s, p) in enumerate(EVENTS)])
    _write(directory / "impressions.csv", ["page_id", "item_ids"], IMPRESSIONS)
    _write(directory / "users.csv", ["user_id", "age", "tenure_days", "email_domain", "region"],
           USERS)
    return directory


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the servers the tests start bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_of_run(config, base, copy_data: bool = False):
    """A copy of a pipeline run's root under ``base`` (and of its data with ``copy_data``),
    to run again or change without touching the session's shared run.  The copied metadata
    store still names the original run's artifacts, which stay where they are and are only
    read.  On the same data directory the data half is a cache hit; the directory is part
    of the ExampleGens' cache key, so a copied one is not."""
    root = os.path.join(base, "root")
    shutil.copytree(config.pipeline_root, root)
    data = config.data_dir
    if copy_data:
        data = os.path.join(base, "data")
        shutil.copytree(config.data_dir, data)
    return dataclasses.replace(config, pipeline_root=root, data_dir=data)
