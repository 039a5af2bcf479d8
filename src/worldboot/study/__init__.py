"""A blind human study: its YAML (:mod:`~worldboot.study.spec`), its votes in SQLite
(:mod:`~worldboot.study.votes`) and their analysis (:mod:`~worldboot.study.analysis`, the paper's
Table 6). The web app collects the votes; ``worldboot evaluate human`` analyses them."""
