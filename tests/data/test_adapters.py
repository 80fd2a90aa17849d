"""Each public-format adapter: on tiny fixtures written here, and on the shared real data.

Real-data tests read ``../shared/data`` (relative to the project root; never copied into the
repository) and skip, saying so, when it is absent. ML-1M is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from metarec.data import Store, ingest
from metarec.data.adapters import ADAPTERS, detect_format
from metarec.errors import BadRowsError, DataError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared(name: str) -> Path:
    """A folder of the shared data, or skip the test when it is not there."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {path} is absent (real-data check skipped)")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(source: Path | list[Path], store: Path, **kwargs: Any) -> dict[str, Any]:
    """Ingest, then read everything back (report, items, users, interactions, categories)."""
    report = ingest(source, store, **kwargs)
    with Store.open(store, read_only=True) as s:
        return {
            "report": report,
            "items": s.items(),
            "users": s.users(),
            "interactions": s.interactions(),
            "categories": s.categories().set_index("category"),
            "stats": s.stats(),
            "timed": s.has_timestamps(),
        }


# ---- tiny fixtures, one per format -------------------------------------------------------------


def test_recbole_fixture(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    write(
        folder / "tiny.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t100\n2\t11\t5\t200\n",
    )
    write(
        folder / "tiny.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
        'class:token_seq\n10\t"Quoted" Film\t1999\tDrama Comedy\n11\tOther\tunkonwn\tAction\n',
    )
    write(folder / "tiny.user", "user_id:token\tage:float\tgender:token\n1\t20\tF\n2\t30\tM\n")
    assert detect_format([folder]) == "recbole"
    got = load(folder, tmp_path / "s.duckdb")
    items = got["items"]
    assert items["category"].tolist() == ["Drama", "Action"]  # the first genre listed
    assert items["title"].tolist() == ['"Quoted" Film', "Other"]  # TSV: quotes are text
    assert items["year"].tolist()[0] == 1999 and pd.isna(items["year"][1])
    assert [json.loads(e) for e in items["extra"]] == [
        {"genres": "Drama|Comedy"},
        {"genres": "Action"},
    ]
    assert json.loads(got["users"]["extra"][0]) == {"age": 20.0, "gender": "F"}  # float field
    assert got["interactions"]["event"].tolist() == ["rating", "rating"]
    assert any("non-numeric year ['unkonwn']" in f for f in got["report"].findings)


def test_movielens_fixture(tmp_path: Path) -> None:
    folder = tmp_path / "ml"
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.5,100\n1,2,3,101\n")
    write(
        folder / "movies.csv",
        "movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n"
        '2,"Big Bang Theory, The (2007-)",Comedy\n3,No Year,(no genres listed)\n',
    )
    write(folder / "tags.csv", "userId,movieId,tag,timestamp\n1,1,funny,100\n")
    assert detect_format([folder]) == "movielens"
    got = load(folder, tmp_path / "s.duckdb")
    items = got["items"]
    assert items["title"].tolist() == ["Toy Story", "Big Bang Theory, The", "No Year"]
    assert items["year"].tolist()[:2] == [1995, 2007] and pd.isna(items["year"][2])
    assert items["category"].tolist() == ["Animation", "Comedy", "(no genres listed)"]
    assert json.loads(items["extra"][0]) == {"genres": "Animation|Comedy"}
    assert got["interactions"]["rating"].tolist() == [4.5, 3.0]
    assert any("tags.csv" in f for f in got["report"].findings)


def test_douban_fixture(tmp_path: Path) -> None:
    folder = tmp_path / "douban"
    write(folder / "book_ratings.dat", "1\t5\t4\n2\t5\t3\n")
    write(folder / "music_ratings.dat", "1\t5\t2\n")
    assert detect_format([folder]) == "douban"
    got = load(folder, tmp_path / "s.duckdb")
    assert got["items"][["item_id", "category"]].values.tolist() == [
        ["book:5", "Book"],
        ["music:5", "Music"],  # same raw id, another domain: another item
    ]
    assert got["users"]["user_id"].tolist() == ["1", "2"]  # shared across domains
    assert got["interactions"]["timestamp"].isna().all()


def test_goodreads_fixture(tmp_path: Path) -> None:
    def line(user: str, book: str, review: str, read: bool, rating: int, date: str) -> str:
        record = {
            "user_id": user,
            "book_id": book,
            "review_id": review,
            "is_read": read,
            "rating": rating,
            "date_added": date,
        }
        return json.dumps(record) + "\n"

    date = "Fri Feb 24 09:00:30 -0800 2017"
    folder = tmp_path / "gr"
    write(
        folder / "goodreads_interactions_children.json",
        line("u1", "b1", "r1", True, 4, date) + line("u1", "b2", "r2", False, 0, ""),
    )
    write(
        folder / "goodreads_interactions_young_adult_sample.json",
        line("u2", "b2", "r3", True, 5, date) + line("u1", "b2", "r2", False, 0, ""),
    )
    assert detect_format([folder]) == "goodreads"
    got = load(folder, tmp_path / "s.duckdb")
    items, x = got["items"], got["interactions"]
    assert items["category"].tolist() == ["Children", "Children"]  # b2: first file's genre
    assert json.loads(items["extra"][1]) == {"genres": "Children|Young Adult"}
    assert len(x) == 3  # r2 is in both files: loaded once
    assert x["event"].tolist() == ["read", "shelve", "read"]
    assert x["rating"].isna().tolist() == [False, True, False]  # 0 means unrated
    assert x["timestamp"][0] == 1487955630 and pd.isna(x["timestamp"][1])
    assert any("several genre files" in f for f in got["report"].findings)

    bad = tmp_path / "bad"
    write(
        bad / "goodreads_interactions_poetry.json",
        line("u1", "b1", "r1", True, 4, date) + line("u1", "b9", "r9", True, 4, "someday"),
    )
    with pytest.raises(BadRowsError) as caught:
        ingest(bad, tmp_path / "bad.duckdb")
    (row,) = caught.value.report.bad_rows
    assert (row.line, row.column, row.value) == (2, "timestamp", "someday")


def test_amazon_pairs_fixture(tmp_path: Path) -> None:
    root = tmp_path / "amazon"
    write(root / "sport_cloth" / "train.txt", "0\t7\t1\n1\t8\t1\n")
    write(root / "sport_cloth" / "test_original.txt", "0\t9\t1\n1\t7\t1\n")
    write(root / "sport_cloth" / "test.txt", "0\t9\t1\n")  # a subset of test_original
    write(root / "cloth_sport" / "train.txt", "0\t7\t1\n")
    assert detect_format([root]) == "amazon-pairs"
    got = load(root, tmp_path / "s.duckdb")
    assert got["categories"]["n_interactions"].to_dict() == {"Cloth": 1, "Sport": 4}
    assert set(got["users"]["user_id"]) == {"cloth-sport:0", "cloth-sport:1"}  # shared per pair
    assert "sport:cloth-sport:7" in set(got["items"]["item_id"])
    assert "cloth:cloth-sport:7" in set(got["items"]["item_id"])
    assert any("repeat across train/test" in f for f in got["report"].findings)

    write(root / "sportcloth" / "train.txt", "0\t7\t1\n")
    with pytest.raises(DataError, match="must be named A_B"):
        ingest(root, tmp_path / "other.duckdb", fmt="amazon-pairs")


def test_every_format_is_in_the_registry() -> None:
    assert set(ADAPTERS) == {
        "table",
        "recbole",
        "movielens",
        "douban",
        "goodreads",
        "amazon-pairs",
        "dbook",
    }


def test_a_wrong_format_names_the_missing_file(tmp_path: Path) -> None:
    folder = write(tmp_path / "t" / "interactions.csv", "user_id,item_id\nu,i\n").parent
    for fmt, message in [
        ("recbole", "no RecBole .inter"),
        ("movielens", "no ratings.csv"),
        ("douban", "_ratings.dat"),
        ("goodreads", "goodreads_interactions_<genre>"),
        ("amazon-pairs", "A_B/ with train.txt"),
    ]:
        with pytest.raises(DataError, match=message):
            ingest(folder, tmp_path / "s.duckdb", fmt=fmt)  # type: ignore[arg-type]
    assert not (tmp_path / "s.duckdb").exists()


# ---- the shared real data ----------------------------------------------------------------------


def test_ml_100k(tmp_path: Path) -> None:
    folder = shared("ml-100k")
    assert detect_format([folder]) == "recbole"
    got = load(folder, tmp_path / "s.duckdb")
    assert got["stats"] == {
        "n_users": 943,
        "n_items": 1682,
        "n_interactions": 100000,
        "n_categories": 19,
    }
    toy = got["items"].iloc[0]
    assert (toy["item_id"], toy["title"], toy["year"], toy["category"]) == (
        "1",
        "Toy Story",
        1995.0,
        "Animation",
    )
    assert json.loads(toy["extra"]) == {"genres": "Animation|Children's|Comedy"}
    assert json.loads(got["users"]["extra"][0])["occupation"] == "technician"
    assert got["timed"]
    assert got["interactions"]["rating"].between(1, 5).all()
    assert got["categories"]["n_interactions"].sum() == 100000

    again = ingest(folder, tmp_path / "s.duckdb")
    assert (again.interactions.unchanged, again.items.unchanged) == (100000, 1682)


@pytest.mark.slow
def test_ml_1m(tmp_path: Path) -> None:
    folder = shared("ml-1m")
    got = load(folder, tmp_path / "s.duckdb")
    assert got["stats"] == {
        "n_users": 6040,
        "n_items": 3883,
        "n_interactions": 1000209,
        "n_categories": 18,
    }
    assert got["report"].seconds < 30  # the performance target on 2 cores
    assert got["items"]["item_id"][0] == "Toy Story (1995)"  # item ids are titles here
    assert got["users"]["user_id"][0] == "1m_1"
    assert got["timed"]


def test_ml_latest_small(tmp_path: Path) -> None:
    folder = shared("ml-latest-small")
    assert detect_format([folder]) == "movielens"
    got = load(folder, tmp_path / "s.duckdb")
    # 20 genres exist, but IMAX is never listed first: 19 primary categories.
    assert got["stats"] == {
        "n_users": 671,
        "n_items": 9125,
        "n_interactions": 100004,
        "n_categories": 19,
    }
    toy = got["items"].iloc[0]
    assert (toy["title"], toy["year"], toy["category"]) == ("Toy Story", 1995.0, "Adventure")
    assert got["timed"]


def test_douban(tmp_path: Path) -> None:
    folder = shared("douban")
    assert detect_format([folder]) == "douban"
    got = load(folder, tmp_path / "s.duckdb")
    cats = got["categories"]
    assert cats["n_items"].to_dict() == {"Book": 6777, "Music": 5567}
    assert cats["n_users"].to_dict() == {"Book": 2110, "Music": 1672}
    assert got["stats"]["n_users"] == 2110 + 1672 - 1566  # 1,566 users rate in both domains
    assert got["stats"]["n_interactions"] == 96041 + 69709
    assert not got["timed"]


def test_goodreads_sample(tmp_path: Path) -> None:
    folder = shared("goodreads-sample")
    assert detect_format([folder]) == "goodreads"
    got = load(folder, tmp_path / "s.duckdb")
    x = got["interactions"]
    assert len(x) == 9960  # 10,000 lines, 40 interactions in both genre files
    assert int(x["rating"].isna().sum()) == 4756  # rating 0: unrated
    assert int((x["event"] == "read").sum()) == 5332
    assert set(got["categories"].index) == {"Children", "Young Adult"}
    assert got["stats"]["n_items"] == 6391 and got["timed"]


def test_amazon_pair_with_its_mirror(tmp_path: Path) -> None:
    root = shared("amazon-pairs")
    sources = [root / "sport_cloth", root / "cloth_sport"]
    assert detect_format(sources) == "amazon-pairs"
    got = load(sources, tmp_path / "s.duckdb")
    cats = got["categories"]
    # 9,928 users in both folders, the same ids: one user set for the two categories.
    assert cats["n_users"].to_dict() == {"Cloth": 9928, "Sport": 9928}
    assert got["stats"]["n_users"] == 9928
    # train + test_original (test.txt is inside test_original).
    assert cats["n_interactions"].to_dict() == {"Cloth": 87829 + 9928, "Sport": 92612 + 9928}
    assert not got["timed"]
