"""Write assets/world/subdivisions.tsv: capitals of first-level subdivisions, from data packages.

Run once by hand (``pip install us==4.0.0 stateInfo==0.0.3``, then ``python tools/subdivisions.py``)
and commit the table: knlab reads the TSV and never imports these packages. Sources and licences are
named in assets/world/README.md.

- US states: ``us`` 4.0.0 (``us.states.STATES``: the 50 states, no territories; BSD-3-Clause,
  Copyright (c) 2014 Sunlight Labs).
- Indian states: ``stateInfo`` 0.0.3 (``stateInfo.stateInfo.dictCapital``; MIT, Copyright (c) 2022
  RohitS); its keys and values carry stray spaces, stripped here.

A capital that two subdivisions share (Chandigarh: Haryana and Punjab) would make "{X} is the capital
of" ambiguous, so both rows are left out; so is a subdivision named like a country of countries.tsv
(Georgia), whose name the world already gives to the country.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "assets" / "world" / "subdivisions.tsv"


def us_states() -> list[tuple[str, str, str, str]]:
    import us

    return [(s.name, "United States", s.capital, "us 4.0.0") for s in sorted(us.states.STATES, key=lambda s: s.name)]


def indian_states() -> list[tuple[str, str, str, str]]:
    from stateInfo import stateInfo

    rows = [(k.strip(), "India", v.strip(), "stateInfo 0.0.3") for k, v in stateInfo.dictCapital.items()
            if k.strip() != "State Name"]  # its first entry is the header
    return sorted(rows)


def rows() -> list[tuple[str, str, str, str]]:
    out = us_states() + indian_states()
    shared = {c for c, n in Counter(r[2] for r in out).items() if n > 1}
    with open(OUT.parent / "countries.tsv", newline="", encoding="utf-8") as fh:
        countries = {r["country"] for r in csv.DictReader(fh, delimiter="\t")}
    return [r for r in out if r[2] not in shared and r[0] not in countries]


def main(path: Path = OUT) -> int:
    data = rows()
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["subdivision", "country", "capital", "source"])
        w.writerows(data)
    print(f"wrote {len(data)} rows to {path}", file=sys.stderr)
    return len(data)


if __name__ == "__main__":
    main()
