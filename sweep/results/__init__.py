"""The results of every sweep: the content-addressed store and the Parquet tables (no Ray, no torch).

    store.py    one storage root (a local folder or s3://…): paths, atomic writes, cached artefacts
    leases.py   one computation of a content key across concurrent sweeps
    schemas.py  what every table and column holds
    parts.py    a table as part files and compacted files, read back in one scan
    tables.py   rows in (`write_part`), tables out (`load`), the grid join, compaction of a storage root
"""

from .schemas import describe_tables
from .store import Store
from .tables import compact, load, write_part

__all__ = ["Store", "compact", "describe_tables", "load", "write_part"]
